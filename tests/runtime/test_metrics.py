"""Metrics sinks: values written come back from the files TensorBoard and W&B read."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import struct
import threading
import time
from pathlib import Path

import pytest

from robot_rl.extras import MissingExtraError, require
from robot_rl.runtime.metrics import (
    MemorySink,
    MetricsSink,
    TensorBoardSink,
    WandbSink,
    make_sink,
)

HAS_WANDB = importlib.util.find_spec("wandb") is not None
needs_wandb = pytest.mark.skipif(
    not HAS_WANDB, reason="the wandb extra is not installed (pip install '.[wandb]')"
)


def _tb_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_sink_writes_event_files_that_read_back(tmp_path: Path):
    sink = make_sink("tensorboard", tmp_path, {"seed": 1})
    assert isinstance(sink, TensorBoardSink) and isinstance(sink, MetricsSink)
    for step in (0, 100, 200):
        sink.scalar("train/return", step / 100 + 0.5, step)
    sink.scalar("eval/success", 1.0, 200)
    sink.flush()
    sink.close()
    scalars = _tb_scalars(tmp_path / "tb")
    assert scalars["train/return"] == [(0, 0.5), (100, 1.5), (200, 2.5)]
    assert scalars["eval/success"] == [(200, 1.0)]


def test_tensorboard_sink_keeps_a_diverging_value(tmp_path: Path):
    sink = make_sink("tensorboard", tmp_path)
    sink.scalar("loss/critic", float("nan"), 3)
    sink.close()
    ((step, value),) = _tb_scalars(tmp_path / "tb")["loss/critic"]
    assert step == 3 and math.isnan(value)


@pytest.mark.parametrize(
    ("name", "value", "step", "match"),
    [
        ("", 1.0, 0, "non-empty"),
        ("x", 1.0, -1, "step -1"),
        ("x", 1.0, 1.5, "step 1.5"),
        ("x", 1.0, True, "step True"),
        ("x", "high", 0, "value 'high'"),
        ("x", None, 0, "value None"),
    ],
)
def test_bad_scalars_are_refused_with_the_field(name, value, step, match):
    sink = MemorySink()
    with pytest.raises(ValueError, match=match):
        sink.scalar(name, value, step)
    assert sink.values == {}


def test_writing_after_close_is_an_error(tmp_path: Path):
    sink = make_sink("tensorboard", tmp_path)
    sink.close()
    sink.close()  # closing twice is harmless
    with pytest.raises(RuntimeError, match="closed TensorBoardSink"):
        sink.scalar("x", 1.0, 0)


def test_unknown_logger_names_the_choices(tmp_path: Path):
    choices = r"\['tensorboard', 'wandb'\]"
    with pytest.raises(ValueError, match=rf"logger 'mlflow' is not one of {choices}"):
        make_sink("mlflow", tmp_path)


def test_memory_sink_takes_two_threads_at_once():
    sink = MemorySink()
    start = threading.Barrier(2)

    def write(name: str) -> None:
        start.wait()
        for step in range(500):
            sink.scalar(name, float(step), step)

    threads = [threading.Thread(target=write, args=(n,)) for n in ("actor/x", "learner/y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [s for s, _ in sink.values["actor/x"]] == list(range(500))
    assert [s for s, _ in sink.values["learner/y"]] == list(range(500))


def test_a_missing_extra_names_the_extra_to_install():
    with pytest.raises(MissingExtraError, match=r"pip install 'robot-rl\[wandb\]'"):
        require("robot_rl_no_such_module_xyz", "wandb", "logger: wandb")
    with pytest.raises(MissingExtraError, match="'robot_rl_no_such_pkg'"):
        require("robot_rl_no_such_pkg.sub", "viewer", "robot-rl view")


@pytest.mark.skipif(HAS_WANDB, reason="checks the message shown when the wandb extra is missing")
def test_wandb_logger_without_the_extra_says_which_extra(tmp_path: Path):
    with pytest.raises(MissingExtraError, match=r"robot-rl\[wandb\]"):
        make_sink("wandb", tmp_path)


# -- W&B (offline: no network) ------------------------------------------------------------------
def _wandb_records(path: Path) -> list[object]:
    """The protobuf records of a ``.wandb`` file: a 7-byte W&B header, then LevelDB's log format
    (32 KiB blocks of chunks: crc32, length (u16 LE), type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block = 32768
    pos, records, pending = 7, [], b""
    while pos + 7 <= len(data):
        left_in_block = block - pos % block
        if left_in_block < 7:  # block trailer padding
            pos += left_in_block
            continue
        (length,) = struct.unpack("<H", data[pos + 4 : pos + 6])
        kind = data[pos + 6]
        if kind == 0 and length == 0:
            break
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


@needs_wandb
def test_wandb_sink_offline_stores_scalars_and_config(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        seed: int = 7
        lr: float = 3e-4

    sink = make_sink("wandb", tmp_path / "run-a", Cfg())
    assert isinstance(sink, WandbSink) and sink.mode == "offline"
    sink.scalar("train/return", 1.5, 10)
    sink.scalar("train/return", 2.5, 20)
    sink.scalar("eval/success", 1.0, 20)
    sink.close()

    (wandb_file,) = (tmp_path / "run-a" / "wandb").glob("offline-run-*/run-*.wandb")
    # finish() returns once W&B's service has the run; its writer may close the file a moment
    # later (a 7-byte file was seen on a loaded machine). Wait for the run's exit record.
    deadline = time.monotonic() + 60.0
    records = _wandb_records(wandb_file)
    while not any(r.WhichOneof("record_type") == "exit" for r in records):
        assert time.monotonic() < deadline, "W&B never wrote the run's exit record"
        time.sleep(0.05)
        records = _wandb_records(wandb_file)
    rows: dict[str, list[tuple[int, float]]] = {}
    config: dict[str, str] = {}  # key -> JSON of the value
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {i.key or "/".join(i.nested_key): i.value_json for i in record.history.item}
            step = int(items.pop("_step"))
            for key, value in items.items():
                if not key.startswith("_"):
                    rows.setdefault(key, []).append((step, float(value)))
        elif kind == "run":
            config.update({i.key: i.value_json for i in record.run.config.update})
    assert rows == {"train/return": [(10, 1.5), (20, 2.5)], "eval/success": [(20, 1.0)]}
    assert (config["seed"], config["lr"]) == ("7", "0.0003")


@needs_wandb
def test_wandb_bad_mode_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match=r"W&B mode 'cloud' is not one of"):
        make_sink("wandb", tmp_path, wandb_mode="cloud")
