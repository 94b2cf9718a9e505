"""`robot-rl reward collect / train / eval` end to end on the twin with the tiny backbone: labels
come from the ground truth, the split keeps episodes whole, the outputs are complete."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from robot_rl.rewards.dataset import FrameDataset, collect_twin

from robot_rl import cli

pytestmark = pytest.mark.timeout(300)


@pytest.mark.integration
def test_collected_labels_match_the_ground_truth_and_round_trip(tmp_path: Path) -> None:
    data = collect_twin("reach", episodes=4, cameras=("front",), size=24, seed=1, hold_steps=3)
    assert data.frames["front"].shape[1:] == (24, 24, 3)
    # Expert episodes (even) succeed and hold success for a few frames; labels say so.
    for episode in (0, 2):
        labels = data.label[data.episode == episode]
        assert labels[-4:].all() and not labels[0]
    path = data.save(tmp_path / "reach.npz")
    loaded = FrameDataset.load(path)
    np.testing.assert_array_equal(loaded.frames["front"], data.frames["front"])
    np.testing.assert_array_equal(loaded.label, data.label)
    assert loaded.meta["task"] == "reach"


@pytest.mark.integration
def test_collect_train_eval_through_the_cli(tmp_path: Path, tiny_dir: Path, capsys) -> None:
    data = tmp_path / "reach.npz"
    argv = ["reward", "collect", "--task", "reach", "--episodes", "8", "--cameras", "front",
            "--size", "32", "--out", str(data)]  # fmt: skip
    assert cli.main(argv) == 0
    common = ["--data", str(data), "--backbone", f"local-dir:{tiny_dir}",
              "--probe", str(tmp_path / "probe.json")]  # fmt: skip
    train = ["reward", "train", *common, "--success-prompt", "the gripper at the red ball",
             "--baseline-prompt", "the gripper far from the red ball",
             "--json", str(tmp_path / "train.json")]  # fmt: skip
    assert cli.main(train) == 0
    report = json.loads((tmp_path / "train.json").read_text())
    assert report["train_positives"] > 0 and report["held_out_frames"] > 0
    assert 0.0 <= report["threshold"] <= 1.0
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert set(probe) >= {"weight", "bias", "temperature", "threshold", "cameras", "backbone"}
    assert probe["cameras"] == ["front"] and probe["backbone"] == f"local-dir:{tiny_dir}"
    evaluate = ["reward", "eval", *common, "--png", str(tmp_path / "pr.png"),
                "--json", str(tmp_path / "eval.json")]  # fmt: skip
    assert cli.main(evaluate) == 0
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["tp"] + metrics["fp"] + metrics["tn"] + metrics["fn"] == len(
        FrameDataset.load(data)
    )
    assert (tmp_path / "pr.png").stat().st_size > 1000


@pytest.mark.integration
def test_classifier_train_eval_relabel_through_the_cli(tmp_path: Path) -> None:
    data = collect_twin("reach", episodes=6, cameras=("front",), size=32, seed=2, hold_steps=3)
    new = collect_twin("reach", episodes=4, cameras=("front",), size=32, seed=3, hold_steps=3)
    data.save(tmp_path / "d.npz")
    new.save(tmp_path / "new.npz")
    model = tmp_path / "clf"
    train = ["reward", "train", "--kind", "classifier", "--data", str(tmp_path / "d.npz"),
             "--model", str(model), "--input-size", "32", "--steps", "30",
             "--json", str(tmp_path / "train.json")]  # fmt: skip
    assert cli.main(train) == 0
    assert (model / "classifier.json").is_file() and (model / "classifier.safetensors").is_file()
    evaluate = ["reward", "eval", "--data", str(tmp_path / "new.npz"), "--model", str(model),
                "--json", str(tmp_path / "eval.json")]  # fmt: skip
    assert cli.main(evaluate) == 0
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["k"] == 3 and metrics["success_episodes"] == 2
    relabel = ["reward", "relabel", "--data", str(tmp_path / "d.npz"), "--model", str(model),
               "--new", str(tmp_path / "new.npz"), "--out-data", str(tmp_path / "merged.npz"),
               "--refit", str(tmp_path / "clf2"), "--steps", "30",
               "--json", str(tmp_path / "relabel.json")]  # fmt: skip
    assert cli.main(relabel) == 0
    report = json.loads((tmp_path / "relabel.json").read_text())
    merged = FrameDataset.load(tmp_path / "merged.npz")
    episodes = len(np.unique(data.episode)) + report["false_positive_episodes"]
    assert len(np.unique(merged.episode)) == episodes
    assert (tmp_path / "clf2" / "classifier.json").is_file()


def test_missing_inputs_are_clear_usage_errors(tmp_path: Path, caplog) -> None:
    argv = ["reward", "eval", "--data", str(tmp_path / "none.npz"), "--backbone",
            "local-dir:/nowhere", "--probe", str(tmp_path / "p.json")]  # fmt: skip
    assert cli.main(argv) == 2
    assert "robot-rl reward collect" in caplog.text


def test_operator_marks_label_frames_on_a_robot_style_collection() -> None:
    """collect_teleop: frames are negative until the operator presses "y", then positive for
    hold_steps more frames; "n" ends an attempt with no positives."""
    import numpy as np

    from robot_rl.console.hub import ConsoleHub
    from robot_rl.envs.twin_env import TwinEnv, TwinEnvConfig
    from robot_rl.runtime.record import collect_teleop
    from robot_rl.teleop_command import TeleopCommand, TeleopConfig

    hub = ConsoleHub()
    env = TwinEnv(TwinEnvConfig(task="reach", obs="pixels", cameras=("front",), image_width=32,
                                image_height=32))  # fmt: skip
    reads = {"n": 0}

    class Operator:
        def read(self) -> TeleopCommand:
            reads["n"] += 1
            if reads["n"] == 5:
                hub.control("mark_success")  # taken at the next step: frame 5 is the first
            if reads["n"] == 5 + 4 + 3:  # second episode, third step
                hub.control("mark_failure")
            return TeleopCommand(np.array([0.5, 0, 0, 0, 0, 0]), None, True)

        def close(self) -> None:
            pass

    data = collect_teleop(env, Operator(), TeleopConfig(device="console"), hub, episodes=2,
                          hold_steps=3, pace=False)  # fmt: skip
    env.close()
    first, second = data.label[data.episode == 0], data.label[data.episode == 1]
    assert first.tolist() == [False] * 5 + [True] * 4
    assert len(second) == 3 and not second.any()
    assert data.frames["front"].shape == (12, 32, 32, 3)
    assert data.meta["source"] == "operator marks"


def test_collect_by_hand_without_the_device_is_a_clear_usage_error(tmp_path: Path, caplog) -> None:
    argv = ["reward", "collect", "--task", "reach", "--teleop", "spacemouse", "--size", "32",
            "--cameras", "front", "--out", str(tmp_path / "d.npz")]  # fmt: skip
    assert cli.main(argv) == 2
    assert "SpaceMouse" in caplog.text or "hidapi" in caplog.text  # unplugged, or no driver
    assert not (tmp_path / "d.npz").exists()
