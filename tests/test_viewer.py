"""``robot-rl view``: the .rrd file holds the cameras, TCP path, actions, control, reward, score."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from robot_rl.data.batch import Transition
from robot_rl.data.episodes import save_episode
from robot_rl.runtime.view import action_names, find_episodes, select

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("rerun") is None,
        reason="rerun-sdk is not installed (pip install '.[viewer]')",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("rerun") is not None
        and importlib.util.find_spec("rerun.chunk") is None,
        reason="reading an .rrd back needs rerun-sdk's rerun.chunk (0.41 or newer)",
    ),
]


def _episode(length: int, intervened: list[bool], xyz: float = 1.0) -> list[Transition]:
    """A reach-shaped episode: state[:3] walks +1 step in x per step (TCP, xyz_step units)."""
    frames = []
    for s in range(length + 1):
        state = np.zeros(16, np.float32)
        state[0] = s * xyz
        frames.append({
            "state": state,
            "front": np.full((6, 8, 3), s, np.uint8),
            "wrist": np.full((6, 8, 3), 200, np.uint8),
        })  # fmt: skip
    action = np.array([0.5, 0, 0, 1], np.float32)
    last = length - 1
    return [
        Transition(
            frames[s], action, float(s == last), frames[s + 1], s == last, False, intervened[s]
        )
        for s in range(length)
    ]


class FakeDetector:
    def __init__(self) -> None:
        self.resets = 0
        self.frames = 0

    def reset(self) -> None:
        self.resets += 1

    def step(self, frames, gate=True):
        self.frames += 1
        assert sorted(frames) == ["front", "wrist"]
        return False, float(frames["front"][0, 0, 0]) / 10


def _entities(path: Path) -> Counter:
    """Rows logged per entity path in an .rrd file (static rows included)."""
    from rerun.chunk import RrdReader

    rows: Counter = Counter()
    for chunk in RrdReader(path).stream():
        rows[chunk.entity_path] += chunk.num_rows
    return rows


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "reach-state-0"
    (run / "episodes").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"env": {"xyz_step_m": 0.02}}))
    save_episode(run / "episodes", _episode(3, [False, True, False]), {"task": "reach"})
    save_episode(run / "episodes", _episode(2, [True, True]), {"task": "reach"})
    return run


def test_the_rrd_holds_the_expected_entities(run_dir: Path, tmp_path: Path):
    from robot_rl.runtime.view import view

    detector = FakeDetector()
    out = tmp_path / "view" / "run.rrd"
    assert view(run_dir, save=out, detector=detector) == 2
    rows = _entities(out)
    frames = (3 + 1) + (2 + 1)  # each episode's frames obs_0 .. obs_T
    steps = 3 + 2
    assert rows["/cameras/front"] == frames and rows["/cameras/wrist"] == frames
    assert rows["/tcp/position"] == frames
    assert rows["/tcp/trajectory/episode_000000"] == 1
    assert rows["/tcp/trajectory/episode_000001"] == 1
    for dim in ("x", "y", "z", "gripper"):
        assert rows[f"/action/{dim}"] == steps
    assert rows["/reward"] == steps and rows["/control/operator"] == steps
    # switches: ep 0 policy->operator->policy (2), ep 1 starts with the operator (1)
    assert rows["/control/log"] == 3
    assert rows["/detector/score"] == frames
    assert rows["/episode"] == 2
    assert (detector.resets, detector.frames) == (2, frames)


def test_one_episode_file_and_episode_selection(run_dir: Path, tmp_path: Path):
    from robot_rl.runtime.view import view

    out = tmp_path / "one.rrd"
    assert view(run_dir / "episodes" / "episode_000001.npz", save=out) == 1
    rows = _entities(out)
    assert rows["/cameras/front"] == 3 and "/detector/score" not in rows
    assert view(run_dir, save=tmp_path / "sel.rrd", episodes=[1]) == 1
    assert view(run_dir, save=tmp_path / "last.rrd", last=1) == 1


def test_the_runs_step_size_scales_the_tcp_path(run_dir: Path):
    source = find_episodes(run_dir)
    assert source.xyz_step_m == 0.02 and len(source.episodes) == 2


@pytest.mark.parametrize(
    ("target", "match"),
    [("nothing-here", "neither an episode file nor a directory"), (".", "no episode_")],
)
def test_bad_targets_name_what_was_looked_for(tmp_path: Path, target, match, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=match):
        find_episodes(target)


def test_bad_selections_and_save_paths_are_refused(run_dir: Path, tmp_path: Path):
    from robot_rl.runtime.view import view

    files = find_episodes(run_dir).episodes
    with pytest.raises(FileNotFoundError, match=r"episodes \[7\] not found; have 0..1"):
        select(files, [7])
    with pytest.raises(ValueError, match="last=0"):
        select(files, last=0)
    with pytest.raises(ValueError, match=r"end in \.rrd"):
        view(run_dir, save=tmp_path / "run.txt")


def test_action_names_follow_the_twins_layout():
    assert action_names(4, False) == ["x", "y", "z", "gripper"]
    assert action_names(7, True) == ["x", "y", "z", "rx", "ry", "rz", "gripper"]
    assert action_names(2, False) == ["0", "1"]


def test_the_cli_saves_an_rrd_and_refuses_a_missing_target(run_dir: Path, tmp_path: Path):
    from robot_rl.cli import main

    out = tmp_path / "cli.rrd"
    assert main(["view", str(run_dir), "--save", str(out), "--episode", "0"]) == 0
    assert _entities(out)["/cameras/front"] == 4
    assert main(["view", str(tmp_path / "nothing"), "--save", str(out)]) == 2


def test_a_hostile_first_file_is_one_line_before_any_viewer_or_file(tmp_path: Path):
    from robot_rl.data.episodes import EpisodeFormatError
    from robot_rl.runtime.view import view

    bad = tmp_path / "episode_000000.npz"
    bad.write_bytes(b"\x80\x04\x95" + bytes(range(200)))  # a pickle's header
    out = tmp_path / "bad.rrd"
    with pytest.raises(EpisodeFormatError, match="never loaded") as info:
        view(bad, save=out)
    assert "allow_pickle" not in str(info.value)
    assert not out.exists()


def test_a_damaged_later_episode_is_skipped_with_an_error_line(run_dir: Path, tmp_path: Path,
                                                               caplog):  # fmt: skip
    from robot_rl.runtime.view import view

    second = run_dir / "episodes" / "episode_000001.npz"
    second.write_bytes(second.read_bytes()[:100])  # cut short
    out = tmp_path / "rest.rrd"
    with caplog.at_level("ERROR"):
        assert view(run_dir, save=out) == 1
    assert any("episode_000001.npz" in r.getMessage() for r in caplog.records)
    assert _entities(out)["/cameras/front"] == 4  # the whole first episode (3 steps, 4 frames)


def test_no_display_is_refused_in_one_line_before_spawning(run_dir: Path, monkeypatch):
    import sys

    from robot_rl.runtime.view import view

    if not sys.platform.startswith("linux"):
        pytest.skip("the display check is for Linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(ValueError, match=r"no display.*--save"):
        view(run_dir)
