"""LeRobotDataset round trip: our episodes -> LeRobotDataset -> our episodes, through LeRobot's
own dataset code (the ``lerobot`` extra; skipped without it)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from robot_rl.data.episodes import load_episodes, save_episode
from tests.data import fakes


def _missing_lerobot() -> str | None:
    """Why the round trip cannot run here, or None."""
    if not any(importlib.util.find_spec(m) for m in ("lerobot", "ledataset")):
        return "the lerobot extra is not installed (pip install '.[lerobot]')"
    try:
        import torchcodec.decoders  # noqa: F401  (loads FFmpeg's shared libraries)
    except (ImportError, RuntimeError, OSError) as exc:
        return f"LeRobot's video decoder torchcodec cannot load FFmpeg here: {exc}"[:200]
    return None


REASON = _missing_lerobot()
needs_lerobot = pytest.mark.skipif(REASON is not None, reason=REASON or "")

# Video (AV1) is lossy: a decoded pixel may differ from the recorded one by this many levels.
# The synthetic frames are flat colours, which the codec keeps within 2 levels; natural camera
# images at the default quality differ more, which is why the tolerance is stated here.
VIDEO_TOLERANCE = 2


def _record(directory: Path) -> None:
    save_episode(directory, fakes.episode(0, 5, "terminated", intervened=[1, 0, 0, 1, 1],
                 cams=("front", "wrist"), hw=(32, 32)), {"task": "reach"})  # fmt: skip
    save_episode(directory, fakes.episode(1, 4, "truncated", intervened=[0, 0, 0, 0],
                 cams=("front", "wrist"), hw=(32, 32)), {"task": "reach"})  # fmt: skip


@needs_lerobot
def test_round_trip_keeps_every_step_up_to_video_loss(tmp_path: Path):
    from robot_rl.data.lerobot_io import export_lerobot, import_lerobot

    _record(tmp_path / "eps")
    out = export_lerobot(load_episodes(tmp_path / "eps"), tmp_path / "ds", fps=10)
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 2 and info["total_frames"] == 5 + 4
    assert info["features"]["observation.images.front"]["dtype"] == "video"
    assert list((out / "videos").rglob("*.mp4"))  # cameras are stored as video
    for key in ("next.reward", "next.done", "complementary_info.is_intervention"):
        assert key in info["features"]

    paths = import_lerobot(out, tmp_path / "back")
    assert [p.name for p in paths] == ["episode_000000.npz", "episode_000001.npz"]
    before = list(load_episodes(tmp_path / "eps", strict=True))
    after = list(load_episodes(tmp_path / "back", strict=True))
    for a, b in zip(before, after, strict=True):
        assert b.meta["task"] == "reach" and b.meta["source"] == "lerobot"
        assert len(a.transitions) == len(b.transitions)
        for t, (x, y) in enumerate(zip(a.transitions, b.transitions, strict=True)):
            np.testing.assert_array_equal(x.obs["state"], y.obs["state"])
            np.testing.assert_array_equal(x.action, y.action)
            assert (x.reward, x.terminated, x.truncated) == (y.reward, y.terminated, y.truncated)
            assert (x.intervened, x.gripper_penalty) == (y.intervened, y.gripper_penalty)
            for cam in ("front", "wrist"):
                diff = np.abs(x.obs[cam].astype(int) - y.obs[cam].astype(int)).max()
                assert diff <= VIDEO_TOLERANCE, f"step {t} {cam}: {diff} levels off"
            if t < len(a.transitions) - 1:
                np.testing.assert_array_equal(x.next_obs["state"], y.next_obs["state"])
        # LeRobot rows have no final observation: the last step's next obs is its own obs
        last = b.transitions[-1]
        np.testing.assert_array_equal(last.next_obs["state"], last.obs["state"])


@needs_lerobot
def test_import_maps_actions_recorded_in_an_envs_units(tmp_path: Path):
    from robot_rl.data.lerobot_io import export_lerobot, import_lerobot

    _record(tmp_path / "eps")
    export_lerobot(load_episodes(tmp_path / "eps"), tmp_path / "ds", use_videos=False)
    paths = import_lerobot(tmp_path / "ds", tmp_path / "back", task="lifted",
                           action_fn=lambda a: -a)  # fmt: skip
    (episode, *_) = load_episodes(tmp_path / "back")
    first = fakes.episode(0, 5)[0].action
    np.testing.assert_array_equal(episode.transitions[0].action, -first)
    assert episode.meta["task"] == "lifted" and len(paths) == 2


@needs_lerobot
def test_bad_inputs_are_refused(tmp_path: Path):
    from robot_rl.data.lerobot_io import export_lerobot, import_lerobot

    with pytest.raises(FileNotFoundError, match="is not a LeRobotDataset folder"):
        import_lerobot(tmp_path, tmp_path / "back")
    with pytest.raises(ValueError, match="no episodes to export"):
        export_lerobot([], tmp_path / "empty")
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="LeRobot writes a new dataset folder"):
        export_lerobot([], tmp_path / "taken")


def test_without_the_extra_the_error_names_it(monkeypatch):
    import sys

    from robot_rl.data.lerobot_io import dataset_class
    from robot_rl.extras import MissingExtraError

    for name in ("lerobot", "lerobot.datasets.lerobot_dataset", "ledataset",
                 "ledataset.datasets.lerobot_dataset"):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'robot-rl\[lerobot\]'"):
        dataset_class()


def test_the_data_cli_refuses_bad_paths(tmp_path: Path):
    from robot_rl.cli import main

    (tmp_path / "taken").mkdir()
    assert main(["data", "export", str(tmp_path / "none"), str(tmp_path / "ds")]) == 2
    assert main(["data", "export", str(tmp_path), str(tmp_path / "taken")]) == 2
    assert main(["data", "export", str(tmp_path), str(tmp_path / "x"), "--demos"]) == 2
    assert main(["data", "import", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2


@needs_lerobot
def test_the_data_cli_round_trip(tmp_path: Path):
    from robot_rl.cli import main

    _record(tmp_path / "eps")
    assert main(["data", "export", str(tmp_path / "eps"), str(tmp_path / "ds"), "--images"]) == 0
    assert main(["data", "import", str(tmp_path / "ds"), "--out", str(tmp_path / "back")]) == 0
    assert len(list(load_episodes(tmp_path / "back"))) == 2


@needs_lerobot
def test_train_takes_imported_demos_into_its_demo_buffer(tmp_path: Path):
    from robot_rl.agents.config import SACConfig
    from robot_rl.data.lerobot_io import export_lerobot, import_lerobot
    from robot_rl.envs.twin_env import TwinEnvConfig, make_env
    from robot_rl.runtime.record import record_demos
    from robot_rl.runtime.train import TrainConfig, TrainingSession

    env_cfg = TwinEnvConfig(task="reach", obs="state", max_episode_steps=15)
    env = make_env(env_cfg)
    record_demos(env, 2, tmp_path / "recorded", seed=5)  # stands in for LeRobot teleop demos
    env.close()
    steps = sum(len(e.transitions) for e in load_episodes(tmp_path / "recorded"))
    export_lerobot(load_episodes(tmp_path / "recorded"), tmp_path / "ds")
    # `robot-rl data import ... --out runs/<name>/demos`, then `robot-rl train --set name=<name>`
    import_lerobot(tmp_path / "ds", tmp_path / "runs" / "from-lerobot" / "demos")
    config = TrainConfig(env=env_cfg, agent=SACConfig(hidden_dims=(16, 16)), env_steps=1, demos=0,
                         learning_starts=1, batch_size=4, eval_every=0, eval_episodes=1,
                         run_dir=str(tmp_path / "runs"), name="from-lerobot")  # fmt: skip
    session = TrainingSession(config)
    assert len(session.demo) == steps
