"""Synthetic episodes whose every frame says where it came from.

Frame (episode e, step s): state = [e, s, 0.5] float32 and every pixel of camera c equals
``pixel(e, s, c)``, so a test reads off which frame a sampled obs / next_obs is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from robot_rl.data.batch import Transition

ACTION_DIM = 3


def pixel(episode: int, step: int, cam: int = 0) -> int:
    return (episode * 37 + step * 5 + cam * 101) % 256


def frame(
    episode: int, step: int, cams: Sequence[str] = ("front",), hw: tuple[int, int] = (4, 4)
) -> dict[str, np.ndarray]:
    obs = {
        name: np.full((*hw, 3), pixel(episode, step, c), dtype=np.uint8)
        for c, name in enumerate(cams)
    }
    obs["state"] = np.array([episode, step, 0.5], dtype=np.float32)
    return obs


def episode(
    episode_id: int,
    length: int,
    end: str | None = "terminated",
    rewards: Sequence[float] | None = None,
    intervened: Sequence[bool] | None = None,
    cams: Sequence[str] = ("front",),
    hw: tuple[int, int] = (4, 4),
) -> list[Transition]:
    """``length`` steps; the last one ends with ``end`` ("terminated", "truncated" or None).

    Step s: action [e, s, -1] / 100, reward rewards[s] (default s / 4), gripper penalty s / 8.
    """
    if end not in ("terminated", "truncated", None):
        raise ValueError(f"end={end!r}")
    frames = [frame(episode_id, s, cams, hw) for s in range(length + 1)]
    steps = []
    for s in range(length):
        last = s == length - 1
        steps.append(
            Transition(
                obs=frames[s],
                action=np.array([episode_id, s, -1.0], dtype=np.float32) / 100,
                reward=float(rewards[s]) if rewards is not None else s / 4,
                next_obs=frames[s + 1],
                terminated=last and end == "terminated",
                truncated=last and end == "truncated",
                intervened=bool(intervened[s]) if intervened is not None else False,
                gripper_penalty=s / 8,
            )
        )
    return steps


def ids(states: np.ndarray) -> list[tuple[int, int]]:
    """(episode, step) of each row of a (B, 3) state batch."""
    return [(int(e), int(s)) for e, s, _ in np.asarray(states)]
