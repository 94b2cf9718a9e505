"""Labelled frames for success detectors: collection on the twin, and one file per dataset.

File (``.npz``, written atomically): ``frames/<camera>`` uint8 (N, H, W, 3), ``label`` bool (N,),
``episode`` int64 (N,), ``step`` int64 (N,), ``meta`` a JSON string (task, cameras, source).

On the twin, labels come from the task's ground-truth predicate (``collect_twin``): half the
episodes are the scripted expert, which succeeds and then holds its success for a few more steps
(so there are enough positive frames), the other half are the expert with its target pushed off
by a random offset (mostly failures, some near misses: the hard negatives). On a robot the
operator labels frames with the console's marks (``robot_rl.runtime.record.collect_teleop``).
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from robot_rl.controllers.reference import Workspace
from robot_rl.controllers.targets import CartesianTarget
from tqdm import tqdm


@dataclass
class FrameDataset:
    frames: dict[str, np.ndarray]
    label: np.ndarray
    episode: np.ndarray
    step: np.ndarray
    meta: dict

    def __len__(self) -> int:
        return len(self.label)

    def subset(self, mask: np.ndarray) -> FrameDataset:
        return FrameDataset({c: f[mask] for c, f in self.frames.items()}, self.label[mask],
                            self.episode[mask], self.step[mask], dict(self.meta))  # fmt: skip

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"frames/{c}": f for c, f in self.frames.items()}
        arrays.update(label=self.label, episode=self.episode, step=self.step,
                      meta=np.array(json.dumps(self.meta)))  # fmt: skip
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @staticmethod
    def load(path: str | Path) -> FrameDataset:
        """The dataset saved at ``path``. A missing file is a FileNotFoundError; anything else
        that is not a whole dataset (truncated, garbage, a pickle, arrays missing or of unequal
        length) is a DatasetError naming the file, in one line. Nothing is ever unpickled."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"dataset {path} not found; make one with robot-rl reward collect"
            )
        with path.open("rb") as fh:
            head = fh.read(len(ZIP_MAGIC))
        if head != ZIP_MAGIC:  # empty, garbage, a plain .npy or a pickle
            raise DatasetError(f"dataset {path} is not a labelled-frames .npz (no zip header); "
                               "make one with robot-rl reward collect")  # fmt: skip
        try:
            with np.load(path, allow_pickle=False) as data:
                return _read_arrays(path, data)
        except DatasetError:
            raise
        except json.JSONDecodeError as exc:
            raise DatasetError(f"dataset {path}: its meta is not JSON ({exc.msg}); make the "
                               "dataset again with robot-rl reward collect") from None  # fmt: skip
        except ValueError:  # numpy's words for object arrays advise allow_pickle: not passed on
            raise DatasetError(
                f"dataset {path} is damaged or holds arrays that are not plain "
                "numbers; collect it again with robot-rl reward collect"
            ) from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise DatasetError(
                f"dataset {path} is truncated or damaged ({type(exc).__name__}: "
                f"{exc}); collect it again or restore a copy"
            ) from None


ZIP_MAGIC = b"PK\x03\x04"
REQUIRED_ARRAYS = ("label", "episode", "step", "meta")


class DatasetError(ValueError):
    """A file that is not a whole labelled-frames dataset (the message names it, one line)."""


def _read_arrays(path: Path, data: Any) -> FrameDataset:
    """The dataset in an open ``np.load`` archive; DatasetError for missing or ragged arrays."""
    missing = [name for name in REQUIRED_ARRAYS if name not in data.files]
    cameras = [k for k in data.files if k.startswith("frames/")]
    if missing or not cameras:
        lacking = ", ".join(missing + ([] if cameras else ["frames/<camera>"]))
        raise DatasetError(f"dataset {path} lacks the array(s) {lacking}; it was not written by "
                           "robot-rl reward collect")  # fmt: skip
    frames = {k.split("/", 1)[1]: data[k] for k in cameras}
    label, episode, step = data["label"], data["episode"], data["step"]
    named = (("label", label), ("episode", episode), ("step", step), *frames.items())
    lengths = {name: len(a) if a.ndim else -1 for name, a in named}
    if len(set(lengths.values())) != 1 or min(lengths.values()) < 0:
        raise DatasetError(f"dataset {path}: its arrays disagree in length {lengths}; each "
                           "needs one entry per frame")  # fmt: skip
    meta = json.loads(str(data["meta"]))
    if not isinstance(meta, dict):
        raise DatasetError(f"dataset {path}: its meta is {type(meta).__name__}, not a mapping")
    return FrameDataset(frames, label.astype(bool), episode, step, meta)


def collect_twin(
    task: str,
    episodes: int,
    cameras: tuple[str, ...] = ("front", "wrist"),
    size: int = 128,
    seed: int = 0,
    hold_steps: int = 10,
    miss_m: float = 0.04,
) -> FrameDataset:
    """Frames of ``episodes`` twin episodes labelled by the success predicate (see module doc)."""
    from robot_rl.sim.cameras import twin_cameras
    from robot_rl.sim.scene import SceneConfig, TwinScene

    specs = twin_cameras(tuple(cameras), size, size)
    scene = TwinScene(SceneConfig(task=task, cameras=specs))
    box_lo, box_hi = np.asarray(Workspace().pos_min_m), np.asarray(Workspace().pos_max_m)
    rng = np.random.default_rng(seed)
    frames: dict[str, list[np.ndarray]] = {c: [] for c in cameras}
    labels, episode_ids, steps = [], [], []
    try:
        for episode in tqdm(range(episodes), desc=f"collecting {task} frames", unit="ep"):
            scene.reset(int(rng.integers(2**31 - 1)))
            expert = scene.task.expert()
            offset = np.zeros(3)
            if episode % 2 == 1:  # a pushed-off expert: mostly failures, some near misses
                offset = rng.uniform(-1, 1, 3) * miss_m
            after_success, step = 0, 0
            while scene.episode_time_s < scene.task.max_episode_s and after_success <= hold_steps:
                action = expert.act(scene.twin)
                # A pushed-off grasp can flick the cube away; the expert then chases it, so its
                # targets are kept inside the workspace (as the env clips the policy's).
                pos = np.clip(action.target.pos_m + offset, box_lo, box_hi)
                target = CartesianTarget(pos, action.target.quat_xyzw)
                success = scene.step(target, action.gripper).success
                for name, frame in scene.render().items():
                    frames[name].append(frame.image)
                labels.append(success)
                episode_ids.append(episode)
                steps.append(step)
                step += 1
                after_success += success or after_success > 0
    finally:
        scene.close()
    return FrameDataset(
        {c: np.stack(f) for c, f in frames.items()}, np.array(labels, bool),
        np.array(episode_ids, np.int64), np.array(steps, np.int64),
        {"task": task, "cameras": list(cameras), "source": "twin ground truth", "size": size},
    )  # fmt: skip
