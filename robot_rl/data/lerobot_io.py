"""Episodes to and from LeRobotDataset (format v3.0), through LeRobot's own dataset code.

The optional extra ``lerobot`` brings that code. robot-rl uses ``lerobot.datasets`` when the
full ``lerobot`` package is installed and otherwise ``ledataset`` (the ``lerobot-dataset``
package: LeRobot's dataset module on its own, with fewer dependencies; see the closing note of
issue 16 for why the extra names it). Nothing here writes parquet, JSON or video by hand.

Mapping (one LeRobot row per robot-rl step t = 0 .. T-1, as LeRobot's RL recorder lays it out):

  ``observation.state``                    float32 (D,)       obs_t["state"]
  ``observation.images.<camera>``          video (H, W, 3)    obs_t[camera]
  ``action``                               float32 (A,)       action_t, robot-rl units [-1, 1]
  ``next.reward``                          float32 (1,)       reward_t
  ``next.done``                            bool (1,)          terminated_t or truncated_t
  ``complementary_info.is_intervention``   bool (1,)          intervened_t
  ``complementary_info.discrete_penalty``  float32 (1,)       -gripper_penalty_t (LeRobot's and
                                                              gym-hil's sign: a penalty is < 0)
  ``complementary_info.truncated``         bool (1,)          truncated_t (a time limit)

LeRobot rows have no place for an episode's final observation obs_T; on import the last step's
next observation is its own observation (LeRobot's convention for a done row), so a round trip
is exact except that one frame, and images differ by the video codec's loss.

Import reads any LeRobotDataset with an ``observation.state`` (more state entries such as
gym-hil's ``observation.environment_state`` are appended, in ``state_keys`` order), its
``observation.images.*`` cameras, ``action`` and, when present, ``next.reward``/``next.done``
and the complementary columns; without ``is_intervention`` every step counts as the operator's
(recorded demos). ``action_fn`` maps actions recorded in an env's own units (gym-hil's gripper
in [0, 2]) into robot-rl's, e.g. ``GymAdapter.from_env_action``. Reading never touches the
network (``HF_HUB_OFFLINE``): a dataset is a local folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.data.batch import STATE_KEY, Transition, image_keys
from robot_rl.data.episodes import Episode, save_episode
from robot_rl.extras import MissingExtraError, require

log = logging.getLogger(__name__)

STATE = "observation.state"
IMAGE_PREFIX = "observation.images."
ACTION = "action"
REWARD = "next.reward"
DONE = "next.done"
INTERVENTION = "complementary_info.is_intervention"
PENALTY = "complementary_info.discrete_penalty"
TRUNCATED = "complementary_info.truncated"
DEFAULT_FPS = 10  # the policy rate, 1 / policy_period_s


def dataset_class() -> Any:
    """LeRobot's ``LeRobotDataset``: from ``lerobot`` if installed, else ``ledataset``."""
    try:
        return require("lerobot.datasets.lerobot_dataset", "lerobot", "LeRobot datasets")
    except MissingExtraError:
        module = require("ledataset.datasets.lerobot_dataset", "lerobot", "LeRobot datasets")
    return module.LeRobotDataset


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """The hub client stays offline: datasets are local folders, never downloads."""
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def _features(first: Transition, use_videos: bool) -> dict[str, dict[str, Any]]:
    state = np.asarray(first.obs[STATE_KEY])
    features: dict[str, dict[str, Any]] = {
        STATE: {"dtype": "float32", "shape": state.shape, "names": None},
        ACTION: {"dtype": "float32", "shape": np.asarray(first.action).shape, "names": None},
        REWARD: {"dtype": "float32", "shape": (1,), "names": None},
        DONE: {"dtype": "bool", "shape": (1,), "names": None},
        INTERVENTION: {"dtype": "bool", "shape": (1,), "names": None},
        PENALTY: {"dtype": "float32", "shape": (1,), "names": None},
        TRUNCATED: {"dtype": "bool", "shape": (1,), "names": None},
    }
    for cam in image_keys(first.obs):
        features[IMAGE_PREFIX + cam] = {
            "dtype": "video" if use_videos else "image",
            "shape": np.asarray(first.obs[cam]).shape,
            "names": ["height", "width", "channels"],
        }
    return features


def export_lerobot(
    episodes: Iterable[Episode],
    out: str | Path,
    *,
    repo_id: str | None = None,
    fps: int = DEFAULT_FPS,
    task: str | None = None,
    use_videos: bool = True,
    robot_type: str = "panda",
) -> Path:
    """Write ``episodes`` as a new LeRobotDataset in folder ``out`` (which must not exist).

    ``task``: the language task of every frame (default: each episode's ``meta["task"]``).
    ``repo_id``: the dataset's name (default ``robot-rl/<out's name>``). Returns ``out``."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; LeRobot writes a new dataset folder")
    if fps < 1:
        raise ValueError(f"fps={fps}; must be >= 1")
    episodes = iter(episodes)
    first = next(episodes, None)
    if first is None:
        raise ValueError("no episodes to export")
    LeRobotDataset = dataset_class()
    features = _features(first.transitions[0], use_videos)
    repo_id = repo_id or f"robot-rl/{re.sub(r'[^A-Za-z0-9_.-]', '_', out.name)}"
    with _offline():
        dataset = LeRobotDataset.create(
            repo_id, fps, features, robot_type=robot_type, root=out, use_videos=use_videos
        )
        try:
            count = 0
            for episode in (first, *episodes):
                _add_episode(dataset, episode, features, task)
                count += 1
        finally:
            dataset.finalize()
    log.info("exported %d episodes to %s", count, out)
    return out


def _add_episode(
    dataset: Any, episode: Episode, features: dict[str, dict[str, Any]], task: str | None
) -> None:
    text = task or str(episode.meta.get("task") or "robot-rl episode")
    for t, step in enumerate(episode.transitions):
        frame: dict[str, Any] = {
            STATE: np.asarray(step.obs[STATE_KEY], np.float32),
            ACTION: np.asarray(step.action, np.float32),
            REWARD: np.array([step.reward], np.float32),
            DONE: np.array([step.terminated or step.truncated]),
            INTERVENTION: np.array([step.intervened]),
            PENALTY: np.array([-step.gripper_penalty], np.float32),
            TRUNCATED: np.array([step.truncated]),
            "task": text,
        }
        for key in features:
            if key.startswith(IMAGE_PREFIX):
                cam = key[len(IMAGE_PREFIX) :]
                if cam not in step.obs:
                    raise ValueError(f"{episode.path}: step {t} has no camera {cam!r}")
                frame[key] = np.asarray(step.obs[cam], np.uint8)
        if frame[STATE].shape != features[STATE]["shape"]:
            raise ValueError(
                f"{episode.path}: state shape {frame[STATE].shape} differs from the first "
                f"episode's {features[STATE]['shape']}; one dataset holds one layout"
            )
        dataset.add_frame(frame)
    dataset.save_episode()


def _to_numpy(value: Any) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _image(value: Any, key: str) -> np.ndarray:
    """A LeRobot image (float CHW in [0, 1] as decoded, or uint8 HWC) as uint8 (H, W, 3)."""
    arr = _to_numpy(value)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"{key} has shape {arr.shape}; expected an RGB image")
    return arr


def read_lerobot(
    root: str | Path,
    *,
    state_keys: Sequence[str] | None = None,
    action_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    video_backend: str | None = None,
) -> Iterator[tuple[list[Transition], dict[str, Any]]]:
    """Yield each episode of the LeRobotDataset in folder ``root`` as (steps, meta)."""
    root = Path(root)
    if not (root / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"{root} is not a LeRobotDataset folder (no meta/info.json)")
    LeRobotDataset = dataset_class()
    with _offline():
        dataset = LeRobotDataset(root.name, root=root, video_backend=video_backend)
    features = dataset.features
    extra_states = sorted(
        k for k in features if k.startswith("observation.") and k != STATE
        and not k.startswith(IMAGE_PREFIX) and features[k]["dtype"] not in ("image", "video")
    )  # fmt: skip
    states = list(state_keys) if state_keys else [STATE, *extra_states]
    missing = [k for k in (*states, ACTION) if k not in features]
    if missing:
        raise ValueError(f"{root}: features {missing} missing; the dataset has {sorted(features)}")
    cameras = sorted(k for k in features if k.startswith(IMAGE_PREFIX))
    episode_of = _to_numpy(dataset.hf_dataset["episode_index"]).reshape(-1)
    for episode_index in sorted(set(episode_of.tolist())):
        rows = np.flatnonzero(episode_of == episode_index)
        items = [dataset[int(i)] for i in rows]
        frames = []
        for item in items:
            obs = {STATE_KEY: np.concatenate([
                _to_numpy(item[k]).astype(np.float32).reshape(-1) for k in states
            ])}  # fmt: skip
            for key in cameras:
                obs[key[len(IMAGE_PREFIX) :]] = _image(item[key], key)
            frames.append(obs)
        steps = []
        for t, item in enumerate(items):
            last = t == len(items) - 1
            action = _to_numpy(item[ACTION]).astype(np.float32).reshape(-1)
            if action_fn is not None:
                action = np.asarray(action_fn(action), np.float32)
            done = bool(_scalar(item, DONE, last))
            truncated = bool(_scalar(item, TRUNCATED, False)) and done
            steps.append(Transition(
                obs=frames[t], action=action, reward=float(_scalar(item, REWARD, 0.0)),
                next_obs=frames[t + 1] if not last else frames[t],
                terminated=done and not truncated, truncated=truncated,
                intervened=bool(_scalar(item, INTERVENTION, True)),
                gripper_penalty=abs(float(_scalar(item, PENALTY, 0.0))),
            ))  # fmt: skip
        task = str(items[0].get("task", "")) or root.name
        yield steps, {"task": task, "source": "lerobot", "dataset": str(root),
                      "episode_index": int(episode_index)}  # fmt: skip


def _scalar(item: dict[str, Any], key: str, default: Any) -> Any:
    if key not in item:
        return default
    return _to_numpy(item[key]).reshape(-1)[0].item()


def import_lerobot(
    root: str | Path,
    out_dir: str | Path,
    *,
    task: str | None = None,
    state_keys: Sequence[str] | None = None,
    action_fn: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[Path]:
    """Save every episode of the LeRobotDataset ``root`` as robot-rl episode files in
    ``out_dir`` (a demos folder ``train`` reads); returns the new files. ``task`` overrides the
    episodes' task label (default: the dataset's language task)."""
    paths = []
    for steps, meta in read_lerobot(root, state_keys=state_keys, action_fn=action_fn):
        if task:
            meta = {**meta, "task": task}
        if not steps:
            continue
        for i, step in enumerate(steps):
            if not np.isfinite(step.obs[STATE_KEY]).all():
                raise ValueError(f"{root}: episode {meta['episode_index']} step {i}: state NaN")
        paths.append(save_episode(out_dir, steps, meta))
    if not paths:
        raise ValueError(f"{root} holds no episodes")
    return paths


__all__ = ["dataset_class", "export_lerobot", "import_lerobot", "read_lerobot"]
