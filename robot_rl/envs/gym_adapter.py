"""Any gymnasium env as a robot-rl env: ``env.id`` + ``env.kwargs`` + a small adapter config.

robot-rl's agents and buffers expect (see ``robot_rl.data.batch``): a Dict observation with
``"state"`` (float32 (D,)) and one uint8 (H, W, 3) image per camera; a Box(-1, 1, (A,)) action
whose last entry is the gripper (-1 close, +1 open, 0 stay); and ``info`` with ``success``,
``intervened``, ``action`` (the action executed when an operator took over, in robot-rl units)
and ``gripper_penalty`` (>= 0). :class:`GymAdapter` turns an external env into that shape:

- observation: the entries named by ``state_keys`` (nested Dict entries as ``"pixels/front"``)
  are flattened and concatenated, in order, into ``state``; the entries named by
  ``camera_keys`` become cameras named after their last path part (``"front"``). Empty lists
  take every non-image entry as state and every uint8 image as a camera. Channel-first
  (3, H, W) images are transposed.
- action: the policy's [-1, 1] is mapped affinely onto the env's Box bounds, or, with
  ``action_scale``, multiplied by it (one value or one per dim); ``gripper_sign: -1`` flips the
  gripper dim first for envs whose gripper axis runs the other way (gym-hil: higher closes).
- info: ``intervention_key`` / ``operator_action_key`` name the env's keys for a take-over and
  the operator's action (gym-hil: ``is_intervention`` / ``teleop_action``; robot-rl:
  ``intervened`` / ``action``); the operator's action is mapped back into [-1, 1].
  ``success_key`` names the success flag (gym-hil: ``succeed``; None: success is a terminal
  step with positive reward); ``penalty_key`` names a gripper penalty (its magnitude is used).

MuJoCo on a headless machine: ``mujoco_gl: osmesa`` sets ``MUJOCO_GL`` before the env's module
is imported, and ``torch._dynamo`` is imported before MuJoCo opens an OSMesa context: importing
triton (which torch's Adam loads lazily) after that context exists segfaults the process.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np

from robot_rl.data.batch import STATE_KEY
from robot_rl.extras import MissingExtraError

log = logging.getLogger(__name__)

# The optional extra that brings a namespace's envs, for the error when it is missing.
NAMESPACE_EXTRAS = {"gym_hil": "gym-hil"}


@dataclass(frozen=True)
class GymAdapterConfig:
    """How an external gymnasium env maps onto robot-rl's observation, action and info
    conventions (see the module docstring)."""

    state_keys: tuple[str, ...] = ()  # obs entries forming "state", in order; () = all non-image
    camera_keys: tuple[str, ...] = ()  # obs entries that are cameras; () = every uint8 image
    action_scale: tuple[float, ...] = ()  # () = [-1, 1] onto the env's bounds; else a * scale
    gripper_dim: int | None = -1  # the gripper's action dim (None: no gripper)
    gripper_sign: int = 1  # -1: the env's gripper axis is the opposite of ours
    intervention_key: str = "intervened"  # gym-hil: is_intervention
    operator_action_key: str = "action"  # gym-hil: teleop_action
    success_key: str | None = "success"  # gym-hil: succeed; None: terminal with reward > 0
    penalty_key: str | None = None  # gym-hil: discrete_penalty (its magnitude is charged)
    mujoco_gl: str | None = None  # "osmesa" | "egl" | "glfw": MUJOCO_GL for MuJoCo envs

    def __post_init__(self) -> None:
        if self.gripper_sign not in (1, -1):
            raise ValueError(f"gripper_sign={self.gripper_sign!r}; allowed: 1, -1")
        scale = np.asarray(self.action_scale, dtype=float)
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError(f"action_scale={list(self.action_scale)}; need finite values > 0")
        if self.mujoco_gl not in (None, "osmesa", "egl", "glfw"):
            raise ValueError(f"mujoco_gl={self.mujoco_gl!r}; allowed: osmesa, egl, glfw")
        overlap = sorted(set(self.state_keys) & set(self.camera_keys))
        if overlap:
            raise ValueError(f"keys {overlap} are in both state_keys and camera_keys")


def _flatten_space(space: gym.Space, prefix: str = "") -> dict[str, gym.Space]:
    if isinstance(space, gym.spaces.Dict):
        out: dict[str, gym.Space] = {}
        for key, sub in space.spaces.items():
            out.update(_flatten_space(sub, f"{prefix}{key}/"))
        return out
    return {prefix.rstrip("/"): space}


def _flatten_obs(obs: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obs, Mapping):
        out: dict[str, Any] = {}
        for key, sub in obs.items():
            out.update(_flatten_obs(sub, f"{prefix}{key}/"))
        return out
    return {prefix.rstrip("/"): obs}


def _image_layout(space: gym.Space) -> Literal["hwc", "chw"] | None:
    """ "hwc"/"chw" for a uint8 RGB image Box, else None."""
    if not isinstance(space, gym.spaces.Box) or space.dtype != np.uint8 or len(space.shape) != 3:
        return None
    if space.shape[-1] == 3:
        return "hwc"
    if space.shape[0] == 3:
        return "chw"
    return None


class GymAdapter(gym.Wrapper):
    """An external gymnasium env in robot-rl's conventions (see the module docstring)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"]}

    def __init__(self, env: gym.Env, config: GymAdapterConfig | None = None) -> None:
        super().__init__(env)
        self.config = cfg = config or GymAdapterConfig()
        env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
        self._env_id = env_id
        entries = _flatten_space(env.observation_space)
        for key in (*cfg.state_keys, *cfg.camera_keys):
            if key not in entries:
                raise ValueError(
                    f"{env_id}: observation key {key!r} not found; the env has {sorted(entries)}"
                )
        cameras = list(cfg.camera_keys) or [k for k, s in entries.items() if _image_layout(s)]
        state = list(cfg.state_keys) or [
            k for k, s in entries.items() if k not in cameras and not _image_layout(s)
        ]
        if not state:
            raise ValueError(f"{env_id}: no observation entries left for 'state' (has {entries})")
        self._state_keys = state
        self._cameras: dict[str, str] = {}  # obs key -> camera name
        self._layouts: dict[str, str] = {}  # obs key -> "hwc" | "chw"
        spaces: dict[str, gym.Space] = {}
        dim = 0
        for key in state:
            space = entries[key]
            if not isinstance(space, gym.spaces.Box) or space.dtype.kind not in "fiub":
                raise ValueError(
                    f"{env_id}: state entry {key!r} is {space}; state entries must be numeric Box"
                )
            dim += int(np.prod(space.shape))
        spaces[STATE_KEY] = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        for key in cameras:
            layout = _image_layout(entries[key])
            if layout is None:
                raise ValueError(
                    f"{env_id}: camera entry {key!r} is {entries[key]}; cameras must be uint8 "
                    "(H, W, 3) or (3, H, W) images"
                )
            name = key.rsplit("/", 1)[-1]
            if name == STATE_KEY or name in self._cameras.values():
                raise ValueError(f"{env_id}: camera {key!r} would be named {name!r}, taken")
            shape = entries[key].shape
            hwc = shape if layout == "hwc" else (shape[1], shape[2], 3)
            self._cameras[key] = name
            self._layouts[key] = layout
            spaces[name] = gym.spaces.Box(0, 255, hwc, np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)

        action_space = env.action_space
        if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
            raise ValueError(
                f"{env_id}: action space {action_space} is not a flat Box; robot-rl acts with "
                "continuous (A,) actions"
            )
        n = action_space.shape[0]
        self._low = action_space.low.astype(np.float64)
        self._high = action_space.high.astype(np.float64)
        if cfg.action_scale:
            if len(cfg.action_scale) not in (1, n):
                raise ValueError(
                    f"{env_id}: action_scale has {len(cfg.action_scale)} values; "
                    f"give 1 or {n} (the env's action dims)"
                )
            self._scale = np.broadcast_to(np.asarray(cfg.action_scale, float), (n,)).copy()
        else:
            unbounded = [
                i for i in range(n) if not np.isfinite([self._low[i], self._high[i]]).all()
            ]
            if unbounded:
                raise ValueError(
                    f"{env_id}: action dims {unbounded} are unbounded; set adapter.action_scale"
                )
            self._scale = None
        if cfg.gripper_dim is not None and not -n <= cfg.gripper_dim < n:
            raise ValueError(f"{env_id}: gripper_dim={cfg.gripper_dim} outside {n} action dims")
        self.action_space = gym.spaces.Box(-1.0, 1.0, (n,), np.float32)
        self._warned_missing_success = False

    # -- conversions ---------------------------------------------------------------------------
    def to_env_action(self, action: np.ndarray) -> np.ndarray:
        """A robot-rl action in [-1, 1] as the env's action (gripper flipped, scaled, clipped)."""
        a = np.asarray(action, dtype=np.float64).copy()
        if a.shape != self.action_space.shape or not np.isfinite(a).all():
            raise ValueError(
                f"action {a.tolist()} must be {self.action_space.shape[0]} finite values"
            )
        a = np.clip(a, -1.0, 1.0)
        if self.config.gripper_dim is not None and self.config.gripper_sign < 0:
            a[self.config.gripper_dim] *= -1.0
        env_a = (
            a * self._scale
            if self._scale is not None
            else (self._low + (a + 1.0) * 0.5 * (self._high - self._low))
        )
        return np.clip(env_a, self._low, self._high).astype(self.env.action_space.dtype)

    def from_env_action(self, env_action: np.ndarray) -> np.ndarray:
        """An action in the env's units (the operator's) as a robot-rl action in [-1, 1]."""
        e = np.asarray(env_action, dtype=np.float64)
        if e.shape != self.action_space.shape or not np.isfinite(e).all():
            raise ValueError(
                f"{self._env_id}: info[{self.config.operator_action_key!r}]={e.tolist()} must be "
                f"{self.action_space.shape[0]} finite values"
            )
        if self._scale is not None:
            a = e / self._scale
        else:
            span = np.where(self._high > self._low, self._high - self._low, 1.0)
            a = 2.0 * (e - self._low) / span - 1.0
        if self.config.gripper_dim is not None and self.config.gripper_sign < 0:
            a[self.config.gripper_dim] *= -1.0
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    def observation(self, obs: Any) -> dict[str, np.ndarray]:
        """The env's observation as robot-rl's Dict; ValueError for non-finite state entries."""
        flat = _flatten_obs(obs)
        parts = []
        for key in self._state_keys:
            value = np.asarray(flat[key], dtype=np.float32).reshape(-1)
            if not np.isfinite(value).all():
                raise ValueError(f"{self._env_id}: observation {key!r} has NaN or inf values")
            parts.append(value)
        out = {STATE_KEY: np.concatenate(parts)}
        for key, name in self._cameras.items():
            image = np.asarray(flat[key], dtype=np.uint8)
            out[name] = np.ascontiguousarray(
                image.transpose(1, 2, 0) if self._layouts[key] == "chw" else image
            )
        return out

    # -- gymnasium API -------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        info = dict(info)
        info["success"] = (
            bool(info.get(self.config.success_key, False)) if (self.config.success_key) else False
        )
        return self.observation(obs), info

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        cfg = self.config
        env_action = self.to_env_action(action)
        obs, reward, terminated, truncated, info = self.env.step(env_action)
        reward = float(reward)
        if not np.isfinite(reward):
            raise ValueError(f"{self._env_id}: reward {reward} is not finite")
        info = dict(info)
        intervened = bool(info.get(cfg.intervention_key, False))
        if intervened:
            if cfg.operator_action_key not in info:
                raise ValueError(
                    f"{self._env_id}: info[{cfg.intervention_key!r}] is true but info has no "
                    f"{cfg.operator_action_key!r} (has {sorted(info)}); set "
                    "adapter.operator_action_key"
                )
            info["action"] = self.from_env_action(info[cfg.operator_action_key])
        else:
            info["action"] = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        info["intervened"] = intervened
        if cfg.success_key is None:
            info["success"] = bool(terminated and reward > 0.0)
        else:
            if cfg.success_key not in info and not self._warned_missing_success:
                self._warned_missing_success = True
                log.warning(
                    "%s: info has no success key %r (has %s); success counts as false",
                    self._env_id, cfg.success_key, sorted(info),
                )  # fmt: skip
            info["success"] = bool(info.get(cfg.success_key, False))
        penalty = float(info.get(cfg.penalty_key, 0.0)) if cfg.penalty_key else 0.0
        info["gripper_penalty"] = abs(penalty)
        return self.observation(obs), reward, bool(terminated), bool(truncated), info

    @property
    def max_episode_steps(self) -> int | None:
        """The env's registered time limit, if any."""
        spec = self.env.spec
        return None if spec is None else spec.max_episode_steps


def prepare_mujoco_gl(mujoco_gl: str | None) -> None:
    """Set ``MUJOCO_GL`` (unless the environment already sets it) and, for OSMesa, import
    ``torch._dynamo`` now: triton imported after MuJoCo opened an OSMesa context segfaults."""
    if mujoco_gl is not None:
        os.environ.setdefault("MUJOCO_GL", mujoco_gl)
    if os.environ.get("MUJOCO_GL") == "osmesa":
        importlib.import_module("torch._dynamo")  # before MuJoCo's context; see the docstring


def ensure_registered(env_id: str) -> None:
    """Import the module that registers ``env_id`` (its namespace, e.g. ``gym_hil``) if it is
    not registered yet; a clear error names the id, the extra or close matches otherwise."""
    if ":" in env_id:  # gymnasium's "module:Env-v0" imports the module itself
        return
    if env_id in gym.registry:
        return
    namespace = env_id.split("/", 1)[0] if "/" in env_id else None
    if namespace == "robot_rl":
        importlib.import_module("robot_rl.envs.registration").register_envs()
    elif namespace is not None:
        try:
            importlib.import_module(namespace)
        except ModuleNotFoundError as exc:
            if exc.name != namespace:
                raise
            extra = NAMESPACE_EXTRAS.get(namespace)
            hint = f"pip install 'robot-rl[{extra}]'" if extra else f"install {namespace!r}"
            raise MissingExtraError(
                f"env.id {env_id!r} needs the package {namespace!r}, not installed: {hint}"
            ) from None
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=5)
        raise ValueError(f"env.id {env_id!r} is not a registered gymnasium env; close: {close}")


def make_gym_env(
    env_id: str,
    kwargs: Mapping[str, Any] | None = None,
    adapter: GymAdapterConfig | None = None,
    max_episode_steps: int | None = None,
) -> GymAdapter:
    """``gymnasium.make(env_id, **kwargs)`` wrapped in a :class:`GymAdapter`."""
    adapter = adapter or GymAdapterConfig()
    prepare_mujoco_gl(adapter.mujoco_gl)
    ensure_registered(env_id)
    extra = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    env = gym.make(env_id, **extra, **dict(kwargs or {}))
    try:
        return GymAdapter(env, adapter)
    except Exception:
        env.close()
        raise


__all__ = ["GymAdapter", "GymAdapterConfig", "ensure_registered", "make_gym_env"]
