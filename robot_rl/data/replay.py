"""Replay buffer for image + state transitions: frames stored once, exact episode ends, n-step.

Storage. Each observation key ("front", "wrist", ..., "state") is one column of frames; an episode
of T steps stores T + 1 frames per key (obs_0 .. obs_T), shared between ``obs`` and ``next_obs``.
Per step the buffer keeps the action, reward, gripper penalty, terminated and intervened flags, the
index of its obs frame (its next_obs frame is the one after) and its episode number. Columns grow in
chunks as data arrives (see ``_chunked``), never reserved for the full capacity; once more than
``capacity`` steps are held the oldest steps are dropped first (FIFO) and their frames freed.

Episodes. Steps arrive in order. A step with terminated or truncated ends its episode and the next
``add`` starts a new one; ``close_episode()`` ends one without a final flag (used for demo segments
and after an actor restart). Inside an episode each step's obs must be the previous step's next_obs;
the state vectors are compared and a mismatch raises ValueError instead of storing a wrong frame.
A step with a NaN or an infinity in its state, action, reward or gripper penalty raises ValueError
and is not stored: one such step would poison every update that samples it.

Targets. For a sampled step i the n-step window is i .. i+k-1 with k = min(n_step, steps left in
its episode, including steps not yet received). rewards = sum_j gamma^j r_{i+j} and
discounts = gamma^k, times 0 only if step i+k-1 terminated. Truncation (a time limit) is not
terminal: the target bootstraps from the episode's true final observation, the last stored frame.
So an open episode's newest steps get a shorter window (k < n_step) until more steps arrive.

Frozen backbones: ``attach_feature_cache`` keeps each stored frame's backbone feature maps beside
it (``robot_rl.data.feature_cache``), computed the first time the frame is sampled; batches then
carry those maps (``Batch.obs_features``) and no images.

Threads: ``add``, ``sample`` and ``close_episode`` take a per-buffer lock, so a thread receiving
transitions and the learner's update thread may share a buffer (one process; no shared memory).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from robot_rl.data._chunked import ChunkedColumn
from robot_rl.data.batch import STATE_KEY, Batch, Transition, image_keys
from robot_rl.data.feature_cache import FeatureCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObsSpec:
    """What one buffer stores: image shapes (H, W, 3) per camera, state and action sizes."""

    image_shapes: dict[str, tuple[int, int, int]]
    state_dim: int
    action_dim: int

    @property
    def keys(self) -> list[str]:
        """Observation keys, cameras sorted then "state"."""
        return [*sorted(self.image_shapes), STATE_KEY]

    @staticmethod
    def from_transition(t: Transition) -> ObsSpec:
        """The spec of the first transition a buffer sees (validated afterwards like any other)."""
        if STATE_KEY not in t.obs:
            raise ValueError(f"obs has keys {sorted(t.obs)}; a '{STATE_KEY}' entry is required")
        shapes: dict[str, tuple[int, int, int]] = {}
        for k in image_keys(t.obs):
            shape = np.shape(t.obs[k])
            if len(shape) != 3 or shape[2] != 3:
                raise ValueError(f"obs[{k!r}] has shape {shape}; images must be (H, W, 3)")
            shapes[k] = (int(shape[0]), int(shape[1]), 3)
        state_shape = np.shape(t.obs[STATE_KEY])
        action_shape = np.shape(t.action)
        if len(state_shape) != 1:
            raise ValueError(f"obs['{STATE_KEY}'] has shape {state_shape}; expected (D,)")
        if len(action_shape) != 1:
            raise ValueError(f"action has shape {action_shape}; expected (A,)")
        return ObsSpec(shapes, int(state_shape[0]), int(action_shape[0]))


def _check_obs(obs: dict[str, np.ndarray], name: str, spec: ObsSpec) -> dict[str, np.ndarray]:
    """Validate one observation against ``spec``; returns arrays (state cast to float32)."""
    if sorted(obs) != sorted(spec.keys):
        raise ValueError(f"{name} has keys {sorted(obs)}; this buffer stores {sorted(spec.keys)}")
    out: dict[str, np.ndarray] = {}
    for k, shape in spec.image_shapes.items():
        img = np.asarray(obs[k])
        if img.dtype != np.uint8:
            raise ValueError(f"{name}[{k!r}] has dtype {img.dtype}; images must be uint8")
        if img.shape != shape:
            raise ValueError(f"{name}[{k!r}] has shape {img.shape}; this buffer stores {shape}")
        out[k] = img
    state = np.asarray(obs[STATE_KEY])
    if state.dtype.kind not in "fiu":
        raise ValueError(f"{name}['{STATE_KEY}'] has dtype {state.dtype}; expected float32")
    if state.shape != (spec.state_dim,):
        raise ValueError(
            f"{name}['{STATE_KEY}'] has shape {state.shape}; this buffer stores ({spec.state_dim},)"
        )
    out[STATE_KEY] = state.astype(np.float32, copy=False)
    if not np.isfinite(out[STATE_KEY]).all():
        raise ValueError(f"{name}['{STATE_KEY}']={state} is not finite; the step is not stored")
    return out


def _finite_float(value: object, name: str) -> float:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a number") from None
    if not math.isfinite(x):
        raise ValueError(f"{name}={x} is not finite")
    return x


def _checked_step(
    t: Transition, spec: ObsSpec
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], tuple]:
    """Validate ``t`` against ``spec``: (obs, next_obs, the step's stored fields but frame and
    episode). Raises ValueError naming the field."""
    obs = _check_obs(t.obs, "obs", spec)
    next_obs = _check_obs(t.next_obs, "next_obs", spec)
    action = np.asarray(t.action)
    if action.dtype.kind not in "fiu" or action.shape != (spec.action_dim,):
        raise ValueError(
            f"action has dtype {action.dtype} and shape {action.shape}; this buffer stores "
            f"float32 ({spec.action_dim},)"
        )
    if not np.all(np.isfinite(action)):
        raise ValueError(f"action={action} is not finite")
    reward = _finite_float(t.reward, "reward")
    penalty = _finite_float(t.gripper_penalty, "gripper_penalty")
    return obs, next_obs, (action, reward, penalty, bool(t.terminated), bool(t.intervened))


def _step_dtype(action_dim: int) -> np.dtype:
    """One stored step: the row of the per-step column (about 30 + 4 A bytes)."""
    return np.dtype(
        [
            ("action", np.float32, (action_dim,)),
            ("reward", np.float32),
            ("gripper_penalty", np.float32),
            ("terminated", np.bool_),
            ("intervened", np.bool_),
            ("frame", np.int64),  # global index of the obs frame; next_obs is frame + 1
            ("episode", np.int64),  # episode (or demo segment) number, consecutive
        ]
    )


class ReplayBuffer:
    """FIFO replay of at most ``capacity`` steps with shared frames and n-step targets.

    capacity: the most steps held (>= 1); gamma: discount per step in [0, 1];
    n_step: steps summed into a target (>= 1); seed: seeds the sampling generator.
    """

    def __init__(self, capacity: int, gamma: float = 0.97, n_step: int = 1, seed: int = 0) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity={capacity!r}; expected an int >= 1")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma={gamma!r}; expected 0 <= gamma <= 1")
        if isinstance(n_step, bool) or not isinstance(n_step, int) or n_step < 1:
            raise ValueError(f"n_step={n_step!r}; expected an int >= 1")
        self.capacity = capacity
        self.gamma = float(gamma)
        self.n_step = n_step
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._feature_cache: FeatureCache | None = None  # stays attached across clear()
        self._reset()

    def _reset(self) -> None:
        self.spec: ObsSpec | None = None
        self._frames: dict[str, ChunkedColumn] = {}
        self._steps: ChunkedColumn | None = None
        self._tail = 0  # global index of the oldest live step
        self._open = False  # the newest episode awaits more steps
        self._episode = -1  # number of the newest episode
        if self._feature_cache is not None:
            self._feature_cache.reset(0)

    def __len__(self) -> int:
        """Steps (transitions) held."""
        return 0 if self._steps is None else self._steps.end - self._tail

    @property
    def nbytes(self) -> int:
        """Bytes of all stored arrays, chunks counted as allocated (what the process holds)."""
        steps = 0 if self._steps is None else self._steps.nbytes
        cache = 0 if self._feature_cache is None else self._feature_cache.nbytes
        return steps + cache + sum(c.nbytes for c in self._frames.values())

    @property
    def num_episodes(self) -> int:
        """Episodes (or demo segments) with at least one step held, the open one included."""
        if len(self) == 0 or self._steps is None:
            return 0
        return self._episode - int(self._steps.row(self._tail)["episode"]) + 1

    @property
    def episode_open(self) -> bool:
        """True while the newest episode has not ended: the next add must continue it."""
        return self._open

    def clear(self) -> None:
        """Drop everything (steps, frames, spec); the sampling generator keeps its state."""
        with self._lock:
            self._reset()

    @property
    def feature_cache(self) -> FeatureCache | None:
        """The attached frozen-backbone feature cache, or None (batches carry images)."""
        return self._feature_cache

    def attach_feature_cache(self, cache: FeatureCache) -> None:
        """From now on, keep each stored frame's frozen-backbone feature maps in ``cache`` and
        sample batches of maps (``Batch.obs_features`` / ``next_obs_features``) with only the
        state in obs / next_obs. Frames already held are encoded when first sampled.
        Raises ValueError if ``cache`` serves another buffer, one is already attached, or its
        cameras or image shapes differ from the stored ones."""
        with self._lock:
            if self._feature_cache is not None or cache.attached:
                raise ValueError(
                    "feature cache: each buffer takes one cache and each cache serves one buffer; "
                    "make a FeatureCache per buffer"
                )
            if self.spec is not None:
                self._check_cache_fits(cache, self.spec)
            start = 0
            if self._steps is not None:
                start = self._frames[STATE_KEY].end
                if len(self) > 0:
                    start = int(self._steps.row(self._tail)["frame"])
            cache.reset(start)
            for _ in range(start, self._frames[STATE_KEY].end if self._frames else 0):
                cache.append_frame()
            cache.attached = True
            self._feature_cache = cache

    def fill_feature_cache(self, chunk_frames: int = 256) -> int:
        """Encode every held frame the attached cache lacks now, ``chunk_frames`` at a time (the
        lock is released between chunks), instead of when first sampled; returns how many were
        encoded. ValueError without a cache."""
        if self._feature_cache is None:
            raise ValueError("fill_feature_cache: no feature cache is attached to this buffer")
        encoded, done = 0, False
        next_frame = 0
        while not done:
            with self._lock:
                if self._steps is None or len(self) == 0:
                    return encoded
                first = max(next_frame, int(self._steps.row(self._tail)["frame"]))
                end = min(self._frames[STATE_KEY].end, first + chunk_frames)
                frames = np.arange(first, end, dtype=np.int64)
                encoded += self._feature_cache.encode_missing(self._frames, frames)
                next_frame, done = end, end >= self._frames[STATE_KEY].end
        return encoded

    @staticmethod
    def _check_cache_fits(cache: FeatureCache, spec: ObsSpec) -> None:
        if cache.image_shapes != spec.image_shapes:
            raise ValueError(
                f"feature cache encodes images {cache.image_shapes}; this buffer stores "
                f"{spec.image_shapes}"
            )

    def close_episode(self) -> None:
        """End the open episode without a terminal flag (its last next_obs stays the bootstrap).

        For demo segments that stop when the operator lets go, and to resume after an actor
        restart lost the end of an episode. No-op when no episode is open.
        """
        with self._lock:
            self._open = False

    def add(self, t: Transition) -> None:
        """Store one step. Raises ValueError (and stores nothing) for a bad or out-of-order step."""
        with self._lock:
            spec = self.spec if self.spec is not None else ObsSpec.from_transition(t)
            obs, next_obs, row = _checked_step(t, spec)
            if self._open:
                stored = self._frames[STATE_KEY].row(self._frames[STATE_KEY].end - 1)
                if not np.array_equal(stored, obs[STATE_KEY], equal_nan=True):
                    raise ValueError(
                        f"obs['{STATE_KEY}']={obs[STATE_KEY]} does not continue the open episode "
                        f"(its last next_obs['{STATE_KEY}']={stored}); end the episode with "
                        "terminated/truncated, or call close_episode() before starting a new one"
                    )
            cache = self._feature_cache
            if self._steps is None and cache is not None:
                self._check_cache_fits(cache, spec)
            steps = self._steps if self._steps is not None else self._allocate(spec)
            if self._open:
                frame = self._frames[STATE_KEY].end - 1  # obs is the stored last next_obs
            else:
                self._episode += 1
                frame = self._frames[STATE_KEY].end
                for k, col in self._frames.items():
                    col.append(obs[k])
                if cache is not None:
                    cache.append_frame()
            for k, col in self._frames.items():
                col.append(next_obs[k])
            if cache is not None:
                cache.append_frame()
            steps.append((*row, frame, self._episode))
            self._open = not (t.terminated or t.truncated)
            if steps.end - self._tail > self.capacity:  # FIFO: drop the oldest step
                self._tail = steps.end - self.capacity
                steps.release_before(self._tail)
                first_frame = int(steps.row(self._tail)["frame"])
                for col in self._frames.values():
                    col.release_before(first_frame)
                if cache is not None:
                    cache.release_before(first_frame)

    def relabel_step(self, action: np.ndarray, next_state: np.ndarray, reward: float,
                     terminated: bool, search_steps: int = 10_000) -> bool:  # fmt: skip
        """Give the newest held step whose action (A,) and next_obs state (D,) are these a new
        reward and terminated flag (an operator's withdrawn mark, ``data.episode_labels``);
        episode boundaries stay. False when none of the newest ``search_steps`` matches (the
        step has left the buffer, or never was in it)."""
        reward = _finite_float(reward, "reward")
        action = np.asarray(action, np.float32)
        next_state = np.asarray(next_state, np.float32)
        with self._lock:
            if self._steps is None or len(self) == 0:
                return False
            states = self._frames[STATE_KEY]
            oldest = max(self._tail, self._steps.end - search_steps)
            for index in range(self._steps.end - 1, oldest - 1, -1):
                row = self._steps.row(index)  # a view: setting its fields changes the buffer
                if np.array_equal(row["action"], action) and np.array_equal(
                    states.row(int(row["frame"]) + 1), next_state
                ):
                    row["reward"] = reward
                    row["terminated"] = bool(terminated)
                    return True
        return False

    def _allocate(self, spec: ObsSpec) -> ChunkedColumn:
        """Create the (empty) columns for ``spec``; returns the per-step column."""
        self.spec = spec
        self._frames = {k: ChunkedColumn(shape, np.uint8) for k, shape in spec.image_shapes.items()}
        self._frames[STATE_KEY] = ChunkedColumn((spec.state_dim,), np.float32)
        self._steps = ChunkedColumn((), _step_dtype(spec.action_dim))
        return self._steps

    def sample(
        self,
        batch_size: int,
        device: str | torch.device = "cpu",
        pin_memory: bool = False,
        minibatches: int = 1,
    ) -> Batch:
        """``batch_size`` steps drawn uniformly with replacement, as a Batch on ``device``.

        Images stay uint8 (B, H, W, 3). Samples come ordered by storage position (gathering in
        order is faster), so a caller that splits a batch into minibatches should ask for them:
        ``minibatches`` consecutive slices, each an independent uniform draw (must divide
        ``batch_size``).
        pin_memory: gather into page-locked memory and copy to ``device`` without blocking
        (ignored, with a warning, when no CUDA device is present).
        """
        if isinstance(minibatches, bool) or not isinstance(minibatches, int) or minibatches < 1:
            raise ValueError(f"minibatches={minibatches!r}; expected an int >= 1")
        if not isinstance(batch_size, bool) and isinstance(batch_size, int):
            if batch_size % minibatches:
                raise ValueError(f"minibatches={minibatches} does not divide {batch_size}")
            parts = [(self, batch_size // minibatches)] * minibatches
        else:
            parts = [(self, batch_size)]  # sample_many explains what is wrong with it
        return sample_many(parts, device=device, pin_memory=pin_memory)

    def _sample_into(self, count: int, out: dict[str, np.ndarray], start: int) -> None:
        """Gather ``count`` samples into rows start .. start+count of the arrays in ``out``."""
        with self._lock:
            if len(self) == 0 or self._steps is None:
                raise ValueError("cannot sample from an empty replay buffer")
            head = self._steps.end
            first = np.sort(self._rng.integers(self._tail, head, size=count))
            window = first[:, None] + np.arange(self.n_step)  # (count, n) step indices
            steps = np.empty(window.size, dtype=self._steps.dtype)
            self._steps.gather(np.minimum(window, head - 1).ravel(), steps)
            steps = steps.reshape(window.shape)
            # The window stops at its episode's end (or at the newest step): a prefix mask.
            inside = (window < head) & (steps["episode"] == steps["episode"][:, :1])
            k = inside.sum(axis=1)  # (count,) >= 1
            powers = self.gamma ** np.arange(self.n_step, dtype=np.float64)
            returns = np.where(inside, steps["reward"] * powers, 0.0).sum(axis=1)
            last = steps[np.arange(count), k - 1]
            discounts = self.gamma ** k.astype(np.float64) * ~last["terminated"]
            rows = slice(start, start + count)
            out["actions"][rows] = steps["action"][:, 0]
            out["rewards"][rows] = returns
            out["discounts"][rows] = discounts
            out["gripper_penalties"][rows] = steps["gripper_penalty"][:, 0]
            out["intervened"][rows] = steps["intervened"][:, 0]
            cache = self._feature_cache
            for key, col in self._frames.items():
                if cache is not None and key != STATE_KEY:
                    continue  # the cache gathers the camera's feature maps instead
                col.gather(steps["frame"][:, 0], out["obs." + key][rows])
                col.gather(last["frame"] + 1, out["next_obs." + key][rows])
            if cache is not None:
                cache.gather(self._frames, steps["frame"][:, 0], last["frame"] + 1, out, rows)


_warned_no_pin = False


def sample_many(
    parts: Sequence[tuple[ReplayBuffer, int]],
    device: str | torch.device = "cpu",
    pin_memory: bool = False,
) -> Batch:
    """One Batch holding ``count`` samples from each ``(buffer, count)`` in turn.

    All buffers asked for samples must store the same observation keys and shapes, and either
    all have a feature cache (of one dtype) or none. The batch is gathered straight into one set
    of tensors (pinned if asked), with no concatenation copy.
    """
    global _warned_no_pin
    for _, n in parts:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"sample count {n!r}; expected an int >= 0")
    active = [(buf, int(n)) for buf, n in parts if n > 0]
    for buf, _ in active:
        if len(buf) == 0:
            raise ValueError("cannot sample from an empty replay buffer")
    total = sum(n for _, n in active)
    if total < 1:
        raise ValueError(f"batch size {total}; expected >= 1")
    spec = active[0][0].spec
    specs = [buf.spec for buf, _ in active]
    if spec is None or any(other != spec for other in specs):
        raise ValueError(f"buffers store different observations: {specs}")
    caches = [buf.feature_cache for buf, _ in active]
    cache = caches[0]
    kinds = {None if c is None else (c.dtype.name, tuple(sorted(c.feature_shapes.items())))
             for c in caches}  # fmt: skip
    if len(kinds) > 1:
        raise ValueError(
            f"buffers sampled together must all have a feature cache of one dtype and shape, or "
            f"none; got {sorted(map(str, kinds))}"
        )
    if pin_memory and not torch.cuda.is_available():
        if not _warned_no_pin:
            log.warning("pin_memory=True but no CUDA device is present; not pinning")
            _warned_no_pin = True
        pin_memory = False

    def empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, pin_memory=pin_memory)

    tensors: dict[str, torch.Tensor] = {
        "actions": empty((total, spec.action_dim), torch.float32),
        "rewards": empty((total,), torch.float32),
        "discounts": empty((total,), torch.float32),
        "gripper_penalties": empty((total,), torch.float32),
        "intervened": empty((total,), torch.bool),
    }
    for prefix in ("obs.", "next_obs."):
        if cache is None:
            for k, shape in spec.image_shapes.items():
                tensors[prefix + k] = empty((total, *shape), torch.uint8)
        tensors[prefix + STATE_KEY] = empty((total, spec.state_dim), torch.float32)
    if cache is not None:
        map_dtype = torch.float16 if cache.dtype == np.float16 else torch.float32
        for prefix in ("obs_features.", "next_obs_features."):
            for k, shape in cache.feature_shapes.items():
                tensors[prefix + k] = empty((total, *shape), map_dtype)
    arrays = {name: t.numpy() for name, t in tensors.items()}
    start = 0
    for buf, n in active:
        buf._sample_into(n, arrays, start)
        start += n
    obs_keys = spec.keys if cache is None else [STATE_KEY]
    cameras = [] if cache is None else sorted(cache.feature_shapes)
    batch = Batch(
        obs={k: tensors["obs." + k] for k in obs_keys},
        actions=tensors["actions"],
        rewards=tensors["rewards"],
        next_obs={k: tensors["next_obs." + k] for k in obs_keys},
        discounts=tensors["discounts"],
        gripper_penalties=tensors["gripper_penalties"],
        intervened=tensors["intervened"],
        obs_features={k: tensors["obs_features." + k] for k in cameras} if cameras else None,
        next_obs_features=(
            {k: tensors["next_obs_features." + k] for k in cameras} if cameras else None
        ),
    )
    if torch.device(device).type != "cpu":
        batch = batch.to(device, non_blocking=pin_memory)
    return batch


def bytes_per_transition(buffer: ReplayBuffer) -> float:
    """``buffer.nbytes / len(buffer)``: bytes held per stored step (replay_bytes_per_transition)."""
    if len(buffer) == 0:
        raise ValueError("bytes_per_transition of an empty buffer is undefined")
    return buffer.nbytes / len(buffer)
