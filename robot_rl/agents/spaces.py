"""Check that an env's spaces fit the agent: Dict(cameras uint8 (H, W, 3), "state" float32 (D,))
observations and a Box action in [-1, 1]^A."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium
import numpy as np

from robot_rl.data.batch import STATE_KEY

# Smallest image side each backbone can reduce to a feature map (conv: 4x patch then /2).
MIN_IMAGE_SIDE = {"conv": 8, "resnet10": 32}


class SpaceError(ValueError):
    """An observation or action space the agent cannot learn on."""


@dataclass(frozen=True)
class SpaceSpec:
    """What the agent needs to know of the spaces.

    image_shapes: camera name -> (H, W, 3), sorted by name (may be empty: state-only tasks).
    state_dim: D of obs["state"]. action_dim: A, the full action including any gripper dim.
    """

    image_shapes: dict[str, tuple[int, int, int]]
    state_dim: int
    action_dim: int

    def continuous_action_dim(self, hybrid_gripper: bool) -> int:
        """A without the gripper dim when a hybrid (discrete) gripper head takes it."""
        return self.action_dim - (1 if hybrid_gripper else 0)


def check_spaces(
    observation_space: gymnasium.Space,
    action_space: gymnasium.Space,
    encoder: str = "conv",
    hybrid_gripper: bool = True,
) -> SpaceSpec:
    """Validate the spaces; raises SpaceError naming the key, what it is and what is allowed."""
    if not isinstance(observation_space, gymnasium.spaces.Dict):
        raise SpaceError(
            f"observation_space is {type(observation_space).__name__}; allowed: a "
            "gymnasium.spaces.Dict of uint8 (H, W, 3) camera images and a float32 (D,) 'state'"
        )
    if STATE_KEY not in observation_space.spaces:
        raise SpaceError(
            f"observation_space has keys {sorted(observation_space.spaces)} but no {STATE_KEY!r}; "
            f"add a float32 (D,) Box {STATE_KEY!r} (proprioception)"
        )
    state = observation_space.spaces[STATE_KEY]
    if not (
        isinstance(state, gymnasium.spaces.Box)
        and state.dtype == np.float32
        and len(state.shape) == 1
        and state.shape[0] >= 1
    ):
        raise SpaceError(
            f"observation_space[{STATE_KEY!r}] is {state}; "
            "allowed: a float32 Box of shape (D,), D >= 1"
        )
    min_side = MIN_IMAGE_SIDE[encoder]
    image_shapes: dict[str, tuple[int, int, int]] = {}
    for name in sorted(k for k in observation_space.spaces if k != STATE_KEY):
        space = observation_space.spaces[name]
        if not (
            isinstance(space, gymnasium.spaces.Box)
            and space.dtype == np.uint8
            and len(space.shape) == 3
            and space.shape[2] == 3
        ):
            raise SpaceError(
                f"observation_space[{name!r}] is {space}; allowed: a uint8 Box of shape (H, W, 3) "
                f"(an RGB camera image; every key other than {STATE_KEY!r} is a camera)"
            )
        H, W, _ = space.shape
        if min(H, W) < min_side:
            raise SpaceError(
                f"observation_space[{name!r}] images are {H}x{W}; the {encoder!r} encoder needs "
                f"at least {min_side}x{min_side}"
            )
        image_shapes[name] = (int(H), int(W), 3)
    if not (isinstance(action_space, gymnasium.spaces.Box) and len(action_space.shape) == 1):
        raise SpaceError(f"action_space is {action_space}; allowed: a Box of shape (A,)")
    if not np.issubdtype(action_space.dtype, np.floating):
        raise SpaceError(f"action_space dtype is {action_space.dtype}; allowed: float32")
    if not (np.all(action_space.low == -1.0) and np.all(action_space.high == 1.0)):
        raise SpaceError(
            f"action_space bounds are low={action_space.low}, high={action_space.high}; "
            "allowed: exactly [-1, 1] in every dim (normalize actions in an env wrapper)"
        )
    action_dim = int(action_space.shape[0])
    min_dims = 2 if hybrid_gripper else 1
    if action_dim < min_dims:
        raise SpaceError(
            f"action_space has {action_dim} dim(s); allowed: at least {min_dims}"
            + (
                " (hybrid_gripper=True: continuous dims, then the gripper)"
                if hybrid_gripper
                else ""
            )
        )
    return SpaceSpec(image_shapes, int(state.shape[0]), action_dim)
