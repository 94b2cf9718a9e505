"""Episode files: exact round trip, open format, atomic writes, crash safety, validation."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import re
import subprocess
import sys
import tracemalloc
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from robot_rl.data import episodes as ep_mod
from robot_rl.data.batch import Transition
from robot_rl.data.episodes import (
    EpisodeFormatError,
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
import os, sys, time
import numpy as np
from robot_rl.data.episodes import save_episode
from tests.data.fakes import episode
rng = np.random.default_rng(0)
real_fsync = os.fsync
def fsync_then_hang(fd):  # the 4th episode is written but not yet renamed: the kill lands here
    real_fsync(fd)
    print("inside", flush=True)
    time.sleep(600)
for e in range(10_000):
    if e == 3:
        os.fsync = fsync_then_hang
    steps = episode(e, 20, "truncated", cams=("front", "wrist"), hw=(48, 48))
    for t in steps:  # incompressible pixels make each write take a while
        for cam in ("front", "wrist"):
            t.next_obs[cam][:] = rng.integers(0, 256, t.next_obs[cam].shape, dtype=np.uint8)
    print(save_episode(sys.argv[1], steps, {"task": "kill_test"}), flush=True)
"""


@pytest.mark.integration  # a child process, killed mid-write
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
        assert proc.stdout.readline().strip() == "inside"  # the 4th write, before its rename
    finally:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    files = sorted(tmp_path.glob("episode_*.npz"))
    assert len(files) == 3
    assert len(list(tmp_path.glob(".episode_000003.npz.*.tmp"))) == 1  # the interrupted write
    with caplog.at_level(logging.WARNING, logger=ep_mod.__name__):
        loaded = list(load_episodes(tmp_path, strict=True))  # every named file is complete
    assert [e.path for e in loaded] == files
    assert all(len(e.transitions) == 20 for e in loaded)
    assert any("interrupted write" in r.getMessage() for r in caplog.records)


def test_leftover_temp_file_is_skipped_with_a_warning(tmp_path: Path, caplog):
    save_episode(tmp_path, episode(0, 2), META)
    (tmp_path / ".episode_000001.npz.4242.tmp").write_bytes(b"PK\x03\x04 half an archive")
    with caplog.at_level(logging.WARNING, logger=ep_mod.__name__):
        loaded = list(load_episodes(tmp_path, strict=True))
    assert len(loaded) == 1
    assert any(".episode_000001.npz.4242.tmp" in r.getMessage() for r in caplog.records)


def test_truncated_file_is_quarantined_or_raises_when_strict(tmp_path: Path, caplog):
    save_episode(tmp_path, noisy_episode(0, 4), META)
    last = save_episode(tmp_path, noisy_episode(1, 4), META)
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(EpisodeFormatError, match=r"episode_000001\.npz"):
        list(load_episodes(tmp_path, strict=True))
    assert last.exists()  # strict leaves it in place
    with caplog.at_level(logging.ERROR, logger=ep_mod.__name__):
        loaded = list(load_episodes(tmp_path))
    assert [e.path.name for e in loaded] == ["episode_000000.npz"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "episode_000001.npz" in errors[0].getMessage()
    moved = tmp_path / "quarantine" / "episode_000001.npz"
    assert moved.is_file() and not last.exists()
    reason = (tmp_path / "quarantine" / "episode_000001.npz.reason.txt").read_text()
    assert "not a readable .npz" in reason


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


def test_an_episode_with_a_nan_state_is_not_saved(tmp_path: Path):
    steps = episode(0, 2)
    bad = replace(steps[1], next_obs={**steps[1].next_obs, "state": np.full(3, np.inf, np.float32)})
    with pytest.raises(ValueError, match=r"obs\.state has NaN or inf"):
        save_episode(tmp_path, [steps[0], bad], META)
    assert not list(tmp_path.glob("*.npz"))


# -- hostile files: quarantined, the rest load -----------------------------------------------------


def npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        out, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return out.getvalue()


def rewrite(path: Path, replace_members: dict[str, bytes] | None = None, bomb: str = "",
            bomb_bytes: int = 0) -> None:  # fmt: skip
    """Rewrite the archive at ``path`` with some members replaced (raw bytes), and optionally
    one member ``bomb`` holding a .npy of ``bomb_bytes`` zeros, deflated (written in chunks)."""
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    members.update(replace_members or {})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            if name != bomb:
                zf.writestr(name, data)
        if bomb:
            with zf.open(bomb, "w", force_zip64=True) as fh:
                fh.write(npy_header("|u1", (bomb_bytes,)))
                chunk = bytes(1 << 20)
                for _ in range(bomb_bytes >> 20):
                    fh.write(chunk)


def deep_meta(path: Path) -> None:
    rewrite(path, {"meta.npy": npy_bytes(np.array("[" * 5000 + "]" * 5000))})


def npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def meta_with(path: Path, **changes: object) -> None:
    _, meta = load_episode(path)
    rewrite(path, {"meta.npy": npy_bytes(np.array(json.dumps({**meta, **changes})))})


HOSTILE = {
    "not-npy": (lambda p: rewrite(p, {"evil.txt": b"#!/bin/sh\n"}), "is not a .npy array"),
    "4-tib-shape": (
        lambda p: rewrite(p, {"obs.front.npy": npy_header("|u1", (4, 1 << 20, 1 << 20, 3))}),
        "claims shape",
    ),
    "deep-meta": (deep_meta, "nests 5000 deep"),
    "last-seq-1e30": (lambda p: meta_with(p, last_seq=1e30), "last_seq=1e+30"),
    "nan-meta": (lambda p: meta_with(p, first_seq=float("nan")), "NaN is not a finite number"),
    "size-lie": (
        lambda p: rewrite(p, {"reward.npy": npy_header("<f4", (3,)) + bytes(4)}),
        "declares",
    ),
    "nan-state": (
        lambda p: rewrite(p, {"obs.state.npy": npy_bytes(np.full((4, 3), np.nan, np.float32))}),
        "'obs.state' holds NaN",
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_file_is_quarantined_and_the_rest_load(tmp_path: Path, name: str, caplog):
    make_bad, reason = HOSTILE[name]
    good = [episode(e, 3, "terminated") for e in range(3)]
    paths = [save_episode(tmp_path, steps, {**META, "first_seq": 3 * e, "last_seq": 3 * e + 2})
             for e, steps in enumerate(good)]  # fmt: skip
    make_bad(paths[1])
    with pytest.raises(EpisodeFormatError, match=re.escape(reason)):
        load_episode(paths[1])
    with caplog.at_level(logging.ERROR, logger=ep_mod.__name__):
        loaded = list(load_episodes(tmp_path))
    assert [e.path for e in loaded] == [paths[0], paths[2]]
    assert_same_steps(loaded[1].transitions, good[2])
    assert (tmp_path / "quarantine" / paths[1].name).is_file() and not paths[1].exists()
    why = (tmp_path / "quarantine" / f"{paths[1].name}.reason.txt").read_text()
    assert reason in why
    assert any("quarantined" in r.getMessage() and reason in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_a_deflate_bomb_is_refused_before_it_is_unpacked(tmp_path: Path):
    path = save_episode(tmp_path, episode(0, 3), META)
    rewrite(path, bomb="obs.front.npy", bomb_bytes=64 << 20)  # 64 MiB of zeros, ~64 KiB packed
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(EpisodeFormatError, match="claims shape"):
            load_episode(path, max_bytes=8 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # the 64 MiB were never unpacked


_NOISE = np.random.default_rng(7).bytes(2000)


@pytest.mark.parametrize(
    "content",
    [
        _NOISE,  # garbage: numpy takes it for a pickle
        b"\x80\x04\x95" + _NOISE[:64],  # a pickle's own header
        np.lib.format.MAGIC_PREFIX + b"\x01\x00" + _NOISE[:32],  # a broken .npy
    ],
    ids=["garbage", "pickle-header", "broken-npy"],
)
def test_a_hostile_file_is_refused_without_numpys_advice_to_unpickle_it(tmp_path: Path, content):
    path = tmp_path / "episode_000000.npz"
    path.write_bytes(content)
    with pytest.raises(EpisodeFormatError, match=r"episode_000000\.npz") as info:
        load_episode(path)
    text = str(info.value)
    assert "allow_pickle" not in text and "pickle.load" not in text
    assert "\n" not in text
