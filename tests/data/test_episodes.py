"""Episode files: exact round trip, open format, atomic writes, crash safety, validation."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from robot_rl.data import episodes as ep_mod
from robot_rl.data.batch import Transition
from robot_rl.data.episodes import (
    EpisodeFormatError,
    EpisodeRecorder,
    episode_arrays,
    load_episode,
    load_episodes,
    save_episode,
)
from robot_rl.data.replay import ReplayBuffer
from tests.data.fakes import episode

REPO_ROOT = Path(__file__).resolve().parents[2]
META = {"task": "pick_cube"}


def noisy_episode(episode_id: int, length: int, end: str | None = "truncated") -> list:
    """Like ``fakes.episode`` but with random pixels, odd rewards and mixed flags."""
    rng = np.random.default_rng(episode_id)
    steps = episode(
        episode_id,
        length,
        end,
        rewards=rng.normal(size=length).astype(np.float32),
        intervened=rng.random(length) < 0.5,
        cams=("front", "wrist"),
        hw=(6, 5),
    )
    for t in (steps[0].obs, *(s.next_obs for s in steps)):
        for cam in ("front", "wrist"):
            t[cam][:] = rng.integers(0, 256, t[cam].shape, dtype=np.uint8)
    return steps


def assert_same_steps(got: list[Transition], want: list[Transition]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        for key in w.obs:
            np.testing.assert_array_equal(g.obs[key], w.obs[key], strict=True)
            np.testing.assert_array_equal(g.next_obs[key], w.next_obs[key], strict=True)
        np.testing.assert_array_equal(g.action, w.action, strict=True)
        assert (g.reward, g.gripper_penalty) == (w.reward, w.gripper_penalty)
        flags = ("terminated", "truncated", "intervened")
        assert [getattr(g, f) for f in flags] == [getattr(w, f) for f in flags]


# -- round trip and format -------------------------------------------------------------------------


def test_round_trip_is_exact_and_meta_is_complete(tmp_path: Path):
    first, second = noisy_episode(0, 7, "truncated"), noisy_episode(1, 3, "terminated")
    p0 = save_episode(tmp_path, first, {**META, "operator": "ana"})
    p1 = save_episode(tmp_path, second, META)
    assert (p0.name, p1.name) == ("episode_000000.npz", "episode_000001.npz")
    steps, meta = load_episode(p0)
    assert_same_steps(steps, first)
    assert meta["task"] == "pick_cube" and meta["operator"] == "ana"
    assert meta["format_version"] == 1 and meta["num_steps"] == 7
    created = dt.datetime.fromisoformat(meta["created_utc"])
    assert created.utcoffset() == dt.timedelta(0)
    loaded = list(load_episodes(tmp_path))
    assert [e.path for e in loaded] == [p0, p1]
    assert_same_steps(loaded[1].transitions, second)


def test_uncompressed_episodes_round_trip_the_same(tmp_path: Path):
    steps = noisy_episode(2, 6, "terminated")
    packed = save_episode(tmp_path / "z", steps, META)
    plain = save_episode(tmp_path / "plain", steps, META, compress=False)
    assert_same_steps(load_episode(plain)[0], steps)
    assert plain.stat().st_size > packed.stat().st_size  # really stored without deflate


def test_file_is_plain_npz_with_the_documented_keys(tmp_path: Path):
    path = save_episode(tmp_path, noisy_episode(0, 4), META)
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    shapes = {k: (v.dtype, v.shape) for k, v in arrays.items()}
    assert shapes == {
        "obs.front": (np.uint8, (5, 6, 5, 3)),
        "obs.wrist": (np.uint8, (5, 6, 5, 3)),
        "obs.state": (np.float32, (5, 3)),
        "action": (np.float32, (4, 3)),
        "reward": (np.float32, (4,)),
        "terminated": (np.bool_, (4,)),
        "truncated": (np.bool_, (4,)),
        "intervened": (np.bool_, (4,)),
        "gripper_penalty": (np.float32, (4,)),
        "meta": (np.dtype(arrays["meta"].dtype), ()),
    }
    assert json.loads(str(arrays["meta"]))["num_steps"] == 4
    assert arrays["truncated"].tolist() == [False, False, False, True]


def test_numbering_continues_after_the_highest_file(tmp_path: Path):
    save_episode(tmp_path, episode(0, 2), META).rename(tmp_path / "episode_000041.npz")
    (tmp_path / "notes.txt").write_text("not an episode")
    assert save_episode(tmp_path, episode(1, 2), META).name == "episode_000042.npz"


def test_loaded_demos_fill_a_replay_buffer(tmp_path: Path):
    for e in range(3):
        save_episode(tmp_path, episode(e, 4, "truncated"), META)
    buf = ReplayBuffer(100)
    for ep in load_episodes(tmp_path):
        for t in ep.transitions:
            buf.add(t)
    assert (len(buf), buf.num_episodes) == (12, 3)


# -- crash safety ----------------------------------------------------------------------------------


def test_error_midway_through_a_write_leaves_earlier_episodes_intact(tmp_path, monkeypatch):
    first = noisy_episode(0, 5)
    save_episode(tmp_path, first, META)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    real_savez = np.savez_compressed

    def half_write(f, **arrays):  # writes part of the archive, then the process "fails"
        real_savez(f, **arrays)
        f.truncate(f.tell() // 2)
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", half_write)
    with pytest.raises(OSError, match="disk full"):
        save_episode(tmp_path, noisy_episode(1, 5), META)

    def refuse_rename(src, dst):
        raise OSError("rename refused")

    monkeypatch.setattr(np, "savez_compressed", real_savez)
    monkeypatch.setattr(os, "replace", refuse_rename)
    with pytest.raises(OSError, match="rename refused"):
        save_episode(tmp_path, noisy_episode(1, 5), META)
    monkeypatch.undo()

    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp file left
    loaded = list(load_episodes(tmp_path, strict=True))
    assert len(loaded) == 1
    assert_same_steps(loaded[0].transitions, first)
    assert save_episode(tmp_path, episode(2, 2), META).name == "episode_000001.npz"


WRITER = """
import sys
import numpy as np
from robot_rl.data.episodes import save_episode
from tests.data.fakes import episode
rng = np.random.default_rng(0)
for e in range(10_000):
    steps = episode(e, 20, "truncated", cams=("front", "wrist"), hw=(48, 48))
    for t in steps:  # incompressible pixels make each write take a while
        for cam in ("front", "wrist"):
            t.next_obs[cam][:] = rng.integers(0, 256, t.next_obs[cam].shape, dtype=np.uint8)
    print(save_episode(sys.argv[1], steps, {"task": "kill_test"}), flush=True)
"""


def test_process_killed_while_writing_leaves_a_loadable_directory(tmp_path: Path, caplog):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        cwd=REPO_ROOT,
        env=env,
        text=True,
    )
    try:
        for _ in range(3):
            assert proc.stdout is not None and proc.stdout.readline(), "writer died early"
        time.sleep(0.013)  # somewhere inside a later write
    finally:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    files = sorted(tmp_path.glob("episode_*.npz"))
    assert len(files) >= 3
    with caplog.at_level(logging.WARNING, logger=ep_mod.__name__):
        loaded = list(load_episodes(tmp_path, strict=True))  # every named file is complete
    assert [e.path for e in loaded] == files
    assert all(len(e.transitions) == 20 for e in loaded)


def test_leftover_temp_file_is_skipped_with_a_warning(tmp_path: Path, caplog):
    save_episode(tmp_path, episode(0, 2), META)
    (tmp_path / ".episode_000001.npz.4242.tmp").write_bytes(b"PK\x03\x04 half an archive")
    with caplog.at_level(logging.WARNING, logger=ep_mod.__name__):
        loaded = list(load_episodes(tmp_path, strict=True))
    assert len(loaded) == 1
    assert any(".episode_000001.npz.4242.tmp" in r.getMessage() for r in caplog.records)


def test_truncated_file_is_logged_and_skipped_or_raises_when_strict(tmp_path: Path, caplog):
    save_episode(tmp_path, noisy_episode(0, 4), META)
    last = save_episode(tmp_path, noisy_episode(1, 4), META)
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with caplog.at_level(logging.ERROR, logger=ep_mod.__name__):
        loaded = list(load_episodes(tmp_path))
    assert [e.path.name for e in loaded] == ["episode_000000.npz"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "episode_000001.npz" in errors[0].getMessage()
    with pytest.raises(EpisodeFormatError, match=r"episode_000001\.npz"):
        list(load_episodes(tmp_path, strict=True))


# -- validation on load ----------------------------------------------------------------------------


def write_arrays(path: Path, **changes: np.ndarray | None) -> Path:
    arrays = episode_arrays(episode(0, 3, "terminated", cams=("front",)))
    meta = {"task": "t", "format_version": 1, "created_utc": "x", "num_steps": 3}
    arrays["meta"] = np.array(json.dumps(meta))
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    np.savez_compressed(path, **arrays)
    return path


BAD_FILES = {
    "missing-reward": (dict(reward=None), r"missing key 'reward'"),
    "missing-meta": (dict(meta=None), r"missing key 'meta'"),
    "missing-state": ({"obs.state": None}, r"missing key 'obs.state'"),
    "action-float64": (dict(action=np.zeros((3, 3))), r"key 'action' has dtype float64"),
    "image-float": ({"obs.front": np.zeros((4, 4, 4, 3))}, r"key 'obs.front' has dtype float64"),
    "image-frames": ({"obs.front": np.zeros((3, 4, 4, 3), np.uint8)}, r"'obs.front' has shape"),
    "state-frames": ({"obs.state": np.zeros((3, 3), np.float32)}, r"'obs.state' has shape"),
    "flags-int": (dict(terminated=np.zeros(3, np.int64)), r"key 'terminated' has dtype int64"),
    "penalty-short": (dict(gripper_penalty=np.zeros(2, np.float32)), r"'gripper_penalty' has"),
    "meta-version": (dict(meta=np.array('{"format_version": 9}')), r"format_version=9"),
    "meta-not-json": (dict(meta=np.array("{oops")), r"'meta' is not JSON"),
    "meta-steps": (
        dict(meta=np.array('{"format_version": 1, "num_steps": 5}')),
        r"num_steps=5",
    ),
    "end-in-middle": (dict(truncated=np.array([True, False, False])), r"only the last step"),
    "object-array": (dict(reward=np.array([1, "a", None], dtype=object)), r"'reward'"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_raises_naming_the_key(tmp_path: Path, name: str):
    changes, pattern = BAD_FILES[name]
    path = write_arrays(tmp_path / "episode_000000.npz", **changes)
    with pytest.raises(EpisodeFormatError, match=pattern) as info:
        load_episode(path)
    assert "episode_000000.npz" in str(info.value)


def test_not_an_npz_raises(tmp_path: Path):
    path = tmp_path / "episode_000000.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(EpisodeFormatError, match="single array"):
        load_episode(path)
    path.write_bytes(b"")
    with pytest.raises(EpisodeFormatError, match="not a readable"):
        load_episode(path)


# -- validation on save ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "steps, meta, pattern",
    [
        ([], META, "at least one transition"),
        (episode(0, 2), {}, r"meta\['task'\]"),
        (episode(0, 2), {**META, "num_steps": 2}, r"\['num_steps'\] are set by save_episode"),
        (episode(0, 2), {**META, "when": dt.datetime.now()}, "not JSON-serializable"),
        ([*episode(0, 2, "truncated"), *episode(0, 3)[2:]], META, "step 1 of 3 ends"),
        ([*episode(0, 3)[:1], *episode(1, 3)[1:]], META, r"step 1: obs\['state'\]"),
        ([replace(episode(0, 1)[0], reward=float("nan"))], META, "reward has NaN"),
        ([replace(episode(0, 1)[0], action=np.array(["a"] * 3))], META, "action has dtype"),
    ],
)
def test_bad_episode_is_not_saved(tmp_path: Path, steps: list, meta: dict, pattern: str):
    with pytest.raises(ValueError, match=pattern):
        save_episode(tmp_path, steps, meta)
    assert not list(tmp_path.iterdir())


# -- recorder --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "meta, max_steps, pattern",
    [({}, 10, r"meta\['task'\]"), ({**META, "created_utc": "x"}, 10, "set by"), (META, 0, "max_")],
)
def test_recorder_rejects_bad_settings(tmp_path: Path, meta: dict, max_steps: int, pattern: str):
    with pytest.raises(ValueError, match=pattern):
        EpisodeRecorder(tmp_path, meta, max_steps=max_steps)


def test_recorder_saves_each_episode_when_it_ends(tmp_path: Path):
    rec = EpisodeRecorder(tmp_path, META)
    first, second = episode(0, 3, "terminated"), episode(1, 2, "truncated")
    returned = [rec.add(t) for t in [*first, *second]]
    assert returned[:2] == [None, None] and returned[3] is None
    assert [p.name for p in (returned[2], returned[4])] == [
        "episode_000000.npz",
        "episode_000001.npz",
    ]
    rec.add(episode(2, 3)[0])  # an unfinished episode stays in memory only
    assert rec.num_pending == 1
    assert len(list(load_episodes(tmp_path))) == 2
    assert_same_steps(load_episode(returned[4])[0], second)


def test_recorder_rejects_a_step_that_does_not_continue(tmp_path: Path):
    rec = EpisodeRecorder(tmp_path, META)
    rec.add(episode(0, 3)[0])
    with pytest.raises(ValueError, match="does not continue"):
        rec.add(episode(1, 3)[0])
    assert rec.num_pending == 1
    rec.discard()
    assert rec.num_pending == 0 and rec.flush() is None
    rec.add(episode(1, 3)[0])
    path = rec.flush()  # saved as an open episode
    assert path is not None
    steps, _ = load_episode(path)
    assert len(steps) == 1 and not (steps[0].terminated or steps[0].truncated)


def test_recorder_bounds_an_episode_that_never_ends(tmp_path: Path, caplog):
    rec = EpisodeRecorder(tmp_path, META, max_steps=4)
    with caplog.at_level(logging.WARNING, logger=ep_mod.__name__):
        paths = [rec.add(t) for t in episode(0, 10, end=None)]
    saved = [p for p in paths if p is not None]
    assert len(saved) == 2 and rec.num_pending == 2
    assert [len(e.transitions) for e in load_episodes(tmp_path)] == [4, 4]
    assert any("max_steps=4" in r.getMessage() for r in caplog.records)
