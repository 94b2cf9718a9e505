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


def _frames(episodes: int, length: int = 6, size: int = 16) -> FrameDataset:
    """``episodes`` episodes of ``length`` frames; even episodes succeed in their last 3 frames
    (bright frames), odd ones never do (dark frames)."""
    rng = np.random.default_rng(0)
    label = np.zeros((episodes, length), bool)
    label[::2, -3:] = True
    shade = np.where(label, 200, 40).reshape(-1, 1, 1, 1)
    noise = rng.integers(0, 30, (episodes * length, size, size, 3))
    frames = (shade + noise).astype(np.uint8)
    return FrameDataset({"front": frames}, label.ravel(), np.repeat(np.arange(episodes), length),
                        np.tile(np.arange(length), episodes), {"cameras": ["front"]})  # fmt: skip


def _error_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "pickle", "object array", "empty"])
def test_a_damaged_dataset_is_one_line_and_never_advises_allow_pickle(
    tmp_path: Path, damage: str, caplog
) -> None:
    import pickle

    from robot_rl.rewards.dataset import DatasetError

    path = tmp_path / "d.npz"
    whole = _frames(2).save(tmp_path / "whole.npz").read_bytes()
    if damage == "truncated":
        path.write_bytes(whole[: len(whole) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x93NUMPY not really" * 50)
    elif damage == "pickle":
        path.write_bytes(pickle.dumps({"label": [1, 2]}))
    elif damage == "object array":
        arrays = {"frames/front": np.zeros((2, 1)), "episode": np.zeros(2), "step": np.zeros(2)}
        np.savez(path, label=np.array([{}, {}], dtype=object), meta=np.array("{}"), **arrays)
    else:
        path.write_bytes(b"")
    with pytest.raises(DatasetError, match=f"dataset {path}") as raised:
        FrameDataset.load(path)
    assert "allow_pickle" not in str(raised.value) and "\n" not in str(raised.value)
    argv = ["reward", "eval", "--data", str(path), "--model", str(tmp_path / "m.json")]
    assert cli.main(argv) == 2
    (line,) = _error_lines(caplog)
    assert line.startswith(f"dataset {path} ") and "allow_pickle" not in line
    assert "robot-rl reward collect" in line or "restore a copy" in line


def test_a_dataset_with_missing_or_ragged_arrays_names_them(tmp_path: Path) -> None:
    from robot_rl.rewards.dataset import DatasetError

    np.savez(tmp_path / "a.npz", label=np.zeros(3))
    with pytest.raises(DatasetError, match=r"lacks the array.*episode, step, meta"):
        FrameDataset.load(tmp_path / "a.npz")
    data = _frames(2)
    data.step = data.step[:-1]
    data.save(tmp_path / "b.npz")
    with pytest.raises(DatasetError, match="disagree in length"):
        FrameDataset.load(tmp_path / "b.npz")


def test_a_missing_model_points_to_reward_train(tmp_path: Path, caplog) -> None:
    from robot_rl.rewards.detector import load_scorer
    from robot_rl.rewards.probe import ProbeScorer

    for load in (ProbeScorer.load, load_scorer):
        with pytest.raises(FileNotFoundError, match="robot-rl reward train") as raised:
            load(tmp_path / "none.json")
        assert "ProbeScorer" not in str(raised.value)
    (tmp_path / "bad.json").write_text('{"bias": 0.1}')
    with pytest.raises(ValueError, match=r"no 'weight'.*train one again"):
        ProbeScorer.load(tmp_path / "bad.json")
    _frames(2).save(tmp_path / "d.npz")
    argv = ["reward", "eval", "--data", str(tmp_path / "d.npz"), "--model",
            str(tmp_path / "none.json")]  # fmt: skip
    assert cli.main(argv) == 2
    (line,) = _error_lines(caplog)
    assert "robot-rl reward train" in line and "ProbeScorer" not in line


def _train_classifier(tmp_path: Path, data: Path, k: int, name: str) -> dict[str, float]:
    out = tmp_path / f"{name}.json"
    argv = ["reward", "train", "--kind", "classifier", "--data", str(data), "--model",
            str(tmp_path / name), "--input-size", "16", "--steps", "2", "--k", str(k),
            "--json", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    return json.loads(out.read_text())


def test_reward_train_k_sets_the_held_out_decision_layer(tmp_path: Path) -> None:
    data = _frames(6).save(tmp_path / "d.npz")  # episodes of 6 frames
    one = _train_classifier(tmp_path, data, 1, "k1")
    assert one["k"] == 1.0
    if one["tp"] + one["fp"] > 0:  # a frame at the threshold fires at once with k=1
        assert "event_precision" in one  # defined: some success event fired
    # Seven frames in a row never happen in a 6-frame episode: nothing can fire, whatever the
    # model, so no held-out success episode is found and no failed one is called a success.
    seven = _train_classifier(tmp_path, data, 7, "k7")
    assert seven["k"] == 7.0
    assert seven["success_episodes"] >= 1 and seven["episode_recall"] == 0.0
    assert seven["episode_false_success_rate"] == 0.0
    assert "event_precision" not in seven  # no event fired: undefined, left out of the JSON


def test_reward_train_refuses_k_below_one(tmp_path: Path, caplog) -> None:
    data = _frames(4).save(tmp_path / "d.npz")
    argv = ["reward", "train", "--kind", "classifier", "--data", str(data), "--model",
            str(tmp_path / "m"), "--k", "0"]  # fmt: skip
    assert cli.main(argv) == 2
    assert "--k=0" in caplog.text
    assert not (tmp_path / "m").exists()


def test_a_held_out_split_of_one_episode_per_class_warns(tmp_path: Path, caplog) -> None:
    from robot_rl.rewards.workflows import warn_if_thin

    assert warn_if_thin({"success_episodes": 1.0, "failed_episodes": 5.0}, "probe p")
    assert warn_if_thin({"success_episodes": 3.0, "failed_episodes": 0.0}, "probe p")
    caplog.clear()
    assert not warn_if_thin({"success_episodes": 2.0, "failed_episodes": 2.0}, "probe p")
    assert not caplog.records
    # Four episodes, two of each kind: the split holds out one of each.
    _train_classifier(tmp_path, _frames(4).save(tmp_path / "d.npz"), 3, "thin")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("held-out split holds 1 successful and 1 failed episode" in w for w in warnings)
