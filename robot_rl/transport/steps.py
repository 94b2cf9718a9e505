"""Transitions on the wire: an actor's steps as one "transitions" message per batch.

An actor's steps form one ordered stream, numbered from 0 by ``seq`` (kept across actor restarts
by the actor's spool, see ``actor_link``). Within the stream a step's ``obs`` is the previous
step's ``next_obs`` unless the step starts an episode, so a message carries every ``next_obs`` and
only the ``obs`` of steps that start an episode: each camera frame crosses the network once, as
uint8 (about 8x less than pickling float32 obs and next_obs, as peers do).

Message layout (``codec`` "transitions"):
  meta   actor_id (str), first_seq (int), count (int), closes_episode (bool), holds_from (int)
  arrays action (k, A) float32, reward (k,) float32, gripper_penalty (k,) float32,
         terminated / truncated / intervened / starts_episode (k,) bool,
         next_obs/<key> (k, ...) for every observation key,
         obs/<key> (m, ...) for the m steps with starts_episode set, in order.

``StepDecoder`` rebuilds ``Transition`` objects for one actor's stream; a batch whose first step
continues an episode needs the previous batch's last ``next_obs`` (in-order delivery is the
sender's job; the receiver drops anything out of order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from robot_rl.data.batch import STATE_KEY, Transition, non_finite_fields
from robot_rl.transport.codec import CodecError, Message, encode

__all__ = ["StepDecoder", "encode_steps", "non_finite_fields"]

FLAG_KEYS = ("terminated", "truncated", "intervened", "starts_episode")
MAX_STEPS = 4096  # steps in one message (an actor seals a batch every 16 steps or every second)


def _check_obs_rows(name: str, key: str, stacked: np.ndarray, rows: int) -> None:
    """``stacked`` holds ``rows`` observations of ``key``: images uint8 (rows, H, W, 3), the
    state float (rows, D)."""
    if key == STATE_KEY:
        if stacked.ndim != 2 or stacked.shape[0] != rows or stacked.dtype.kind != "f":
            raise CodecError(
                f"transitions: {name} is {stacked.dtype} {stacked.shape}; expected float "
                f"({rows}, D)"
            )
        return
    if stacked.ndim != 4 or stacked.shape[0] != rows or stacked.shape[3] != 3:
        raise CodecError(
            f"transitions: {name} is {stacked.dtype} {stacked.shape}; expected uint8 "
            f"({rows}, H, W, 3)"
        )
    if stacked.dtype != np.uint8:
        raise CodecError(f"transitions: {name} is {stacked.dtype}; images must be uint8")


def encode_steps(
    actor_id: str,
    first_seq: int,
    steps: Sequence[Transition],
    starts_episode: Sequence[bool],
    msg_seq: int | None = None,
    closes_episode: bool = False,
) -> list[Any]:
    """Frames of one "transitions" message for consecutive ``steps`` of an actor's stream.

    closes_episode: the actor stops this episode here without an end flag (shutdown, an
    operator reset); the learner stores it as unfinished instead of waiting for more steps.
    """
    if not steps or len(steps) != len(starts_episode):
        raise CodecError("encode_steps needs >= 1 step and one starts_episode flag per step")
    keys = sorted(steps[0].next_obs)
    arrays: dict[str, np.ndarray] = {
        "action": np.stack([np.asarray(t.action, np.float32) for t in steps]),
        "reward": np.array([t.reward for t in steps], np.float32),
        "gripper_penalty": np.array([t.gripper_penalty for t in steps], np.float32),
        "terminated": np.array([t.terminated for t in steps], bool),
        "truncated": np.array([t.truncated for t in steps], bool),
        "intervened": np.array([t.intervened for t in steps], bool),
        "starts_episode": np.array(starts_episode, bool),
    }
    for key in keys:
        arrays[f"next_obs/{key}"] = np.stack([t.next_obs[key] for t in steps])
        firsts = [t.obs[key] for t, first in zip(steps, starts_episode, strict=True) if first]
        if firsts:
            arrays[f"obs/{key}"] = np.stack(firsts)
    meta = {"actor_id": actor_id, "first_seq": first_seq, "count": len(steps),
            "closes_episode": closes_episode}  # fmt: skip
    return encode("transitions", first_seq if msg_seq is None else msg_seq, meta, arrays)


class StepDecoder:
    """Rebuilds one actor's transitions from its messages, in stream order."""

    def __init__(self) -> None:
        self.last_next_obs: dict[str, np.ndarray] | None = None

    def decode(self, message: Message) -> list[Transition]:
        """The message's transitions; CodecError if it is malformed or cannot continue.

        Checked before anything is built: ``count`` is an int in 1..MAX_STEPS; ``action`` is a
        float (count, A) array; ``reward`` and ``gripper_penalty`` float (count,); the flags bool
        (count,); each ``next_obs/<key>`` holds count rows (images uint8 (H, W, 3), ``state``
        float (D,)) and each ``obs/<key>`` the same row shape. (Non-finite numbers are the
        receiver's to drop, step by step: see ``non_finite_fields``.)
        """
        meta, arrays = message.meta, message.arrays
        count = meta.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_STEPS:
            raise CodecError(f"transitions: count={count!r}; expected an int in 1..{MAX_STEPS}")
        for key in ("action", "reward", "gripper_penalty", *FLAG_KEYS):
            if key not in arrays:
                raise CodecError(f"transitions: array {key!r} is missing")
        action = arrays["action"]
        if action.ndim != 2 or action.shape[0] != count or action.dtype.kind != "f":
            raise CodecError(
                f"transitions: action is {action.dtype} {action.shape}; expected float ({count}, A)"
            )
        for key in ("reward", "gripper_penalty"):
            if arrays[key].shape != (count,) or arrays[key].dtype.kind != "f":
                raise CodecError(
                    f"transitions: {key} is {arrays[key].dtype} {arrays[key].shape}; expected "
                    f"float ({count},)"
                )
        for key in FLAG_KEYS:
            if arrays[key].dtype != np.bool_ or arrays[key].shape != (count,):
                raise CodecError(
                    f"transitions: {key} is {arrays[key].dtype} {arrays[key].shape}; expected "
                    f"bool ({count},)"
                )
        obs_keys = sorted(k.split("/", 1)[1] for k in arrays if k.startswith("next_obs/"))
        if not obs_keys:
            raise CodecError("transitions: no next_obs arrays")
        next_obs = {k: arrays[f"next_obs/{k}"] for k in obs_keys}
        for key, stacked in next_obs.items():
            _check_obs_rows(f"next_obs/{key}", key, stacked, count)
        starts = arrays["starts_episode"]
        first_obs = {k: arrays.get(f"obs/{k}") for k in obs_keys}
        n_starts = int(starts.sum())
        for key, stacked in first_obs.items():
            if stacked is None and n_starts:
                raise CodecError(f"transitions: obs/{key} must hold {n_starts} episode starts")
            if stacked is not None:
                _check_obs_rows(f"obs/{key}", key, stacked, n_starts)
                if stacked.shape[1:] != next_obs[key].shape[1:]:
                    raise CodecError(
                        f"transitions: obs/{key} rows are {stacked.shape[1:]}, next_obs/{key} "
                        f"rows {next_obs[key].shape[1:]}"
                    )
        if not starts[0] and self.last_next_obs is None:
            raise CodecError("transitions: the first step continues an episode never received")
        if not starts[0] and self.last_next_obs is not None:
            previous_keys = sorted(self.last_next_obs)
            if previous_keys != obs_keys or any(
                self.last_next_obs[k].shape != next_obs[k].shape[1:] for k in obs_keys
            ):
                raise CodecError(
                    "transitions: the first step continues an episode whose observations had "
                    "other keys or shapes"
                )
        steps, start_index = [], 0
        previous = self.last_next_obs
        for i in range(count):
            if starts[i]:
                obs = {k: first_obs[k][start_index] for k in obs_keys}  # type: ignore[index]
                start_index += 1
            else:
                obs = previous  # type: ignore[assignment]
            step_next = {k: next_obs[k][i] for k in obs_keys}
            steps.append(
                Transition(
                    obs,
                    arrays["action"][i],
                    float(arrays["reward"][i]),
                    step_next,
                    bool(arrays["terminated"][i]),
                    bool(arrays["truncated"][i]),
                    bool(arrays["intervened"][i]),
                    float(arrays["gripper_penalty"][i]),
                )
            )
            previous = step_next
        self.last_next_obs = previous
        return steps
