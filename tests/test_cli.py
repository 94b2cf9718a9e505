"""Tests for the robot-rl command line and the benchmark report helpers.

Benchmarks are swapped for a fake registered under ``BENCHES`` so these tests run in milliseconds;
the real control benchmark is exercised in tests/bench.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import types

import pytest

from robot_rl import cli
from robot_rl.bench.report import check_flat, format_table, write_json

FAKE_RESULTS = {"seed": 0, "latency_us_p50": 12.5, "ok": True}
fake_calls: list[dict] = []


def fake_bench(seed: int = 0, quick: bool = False) -> dict[str, float]:
    fake_calls.append({"seed": seed, "quick": quick})
    return {**FAKE_RESULTS, "seed": seed}


@pytest.fixture
def fake(monkeypatch):
    fake_calls.clear()
    monkeypatch.setitem(cli.BENCHES, "fake", f"{__name__}:fake_bench")
    return fake_calls


# -- help and parsing -----------------------------------------------------------------------------
def test_help_exits_0_and_lists_subcommands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "bench" in out
    assert "demo" in out


def test_bench_help_lists_registered_benches(capsys):
    assert cli.main(["bench", "--help"]) == 0
    assert "control" in capsys.readouterr().out


def test_every_registered_bench_resolves_to_a_function():
    for name in cli.BENCHES:
        assert callable(cli.load_bench(name)), name


@pytest.mark.parametrize(
    "argv",
    [
        [],  # a subcommand is required
        ["frobnicate"],
        ["bench"],  # the bench name is required
        ["bench", "control", "--seed", "one"],
        ["demo", "--seed", "1.5"],
    ],
)
def test_bad_arguments_are_usage_errors(argv, caplog):
    with caplog.at_level(logging.ERROR, logger="robot_rl.cli"):
        assert cli.main(argv) == cli.USAGE_ERROR
    assert caplog.records, "the error must be logged"


# -- bench ----------------------------------------------------------------------------------------
def test_unknown_bench_names_the_known_ones(caplog, fake):
    with caplog.at_level(logging.ERROR, logger="robot_rl.cli"):
        assert cli.main(["bench", "nope"]) == 2
    assert "unknown bench 'nope'" in caplog.text
    assert "control" in caplog.text
    assert fake == []


def test_bench_writes_flat_json_and_prints_a_table(tmp_path, capsys, fake):
    out = tmp_path / "new" / "folder" / "fake.json"
    assert cli.main(["bench", "fake", "--json", str(out), "--seed", "7", "--quick"]) == 0
    assert fake == [{"seed": 7, "quick": True}]
    written = json.loads(out.read_text())
    host = {
        k: written.pop(k) for k in ("host_cpu_busy_fraction_run", "host_cpu_steal_fraction_run")
    }
    assert written == {**FAKE_RESULTS, "seed": 7}
    # what the host's CPUs did over the run: fractions, or -1 where /proc/stat is not there
    assert all(v == -1.0 or 0.0 <= v <= 1.0 for v in host.values())
    table = capsys.readouterr().out
    assert "latency_us_p50" in table
    assert "12.500" in table


def test_bench_without_json_only_prints(capsys, fake):
    assert cli.main(["bench", "fake"]) == 0
    assert "latency_us_p50" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["parent_is_a_file", "path_is_a_folder"])
def test_unwritable_json_path_fails_before_the_run(tmp_path, caplog, fake, kind):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    path = blocker / "out.json" if kind == "parent_is_a_file" else tmp_path
    with caplog.at_level(logging.ERROR, logger="robot_rl.cli"):
        assert cli.main(["bench", "fake", "--json", str(path)]) == 2
    assert str(path) in caplog.text
    assert fake == [], "the bench must not run when its output cannot be written"


# -- demo -----------------------------------------------------------------------------------------
def test_demo_calls_run_demo_with_task_seed_and_episodes(monkeypatch):
    calls = []

    def run_demo(task: str, seed: int, episodes: int) -> int:
        calls.append((task, seed, episodes))
        return 3

    fake_module = types.ModuleType("robot_rl.demo")
    fake_module.run_demo = run_demo
    monkeypatch.setitem(sys.modules, "robot_rl.demo", fake_module)
    assert cli.main(["demo", "--task", "pick_cube", "--seed", "5", "--episodes", "1"]) == 3
    assert cli.main(["demo"]) == 3
    assert calls == [("pick_cube", 5, 1), ("all", 0, 2)]
    assert cli.main(["demo", "--episodes", "0"]) == 2


def test_demo_runs_one_real_episode(capsys):
    assert cli.main(["demo", "--task", "reach", "--episodes", "1"]) == 0
    out = capsys.readouterr().out
    assert "1/1 episodes solved" in out
    assert "within the Panda limits" in out


def test_demo_unknown_task_names_the_known_ones(capsys):
    assert cli.main(["demo", "--task", "stack"]) == 2
    assert "pick_cube" in capsys.readouterr().out


# -- report helpers -------------------------------------------------------------------------------
def test_write_json_creates_parents_and_round_trips(tmp_path):
    results = {"b_us": 1.25, "a_count": 3, "name": "x", "flag": False}
    path = write_json(tmp_path / "x" / "y" / "r.json", results)
    assert json.loads(path.read_text()) == results


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ({"nested": {"a": 1.0}}, "nested"),
        ({"values": [1.0, 2.0]}, "values"),
        ({"bad_us": math.nan}, "bad_us"),
        ({"big_us": math.inf}, "big_us"),
        ({3: 1.0}, "3"),
    ],
)
def test_non_flat_or_non_finite_results_are_rejected(tmp_path, results, message):
    with pytest.raises(ValueError, match=message):
        check_flat(results)
    with pytest.raises(ValueError, match=message):
        write_json(tmp_path / "r.json", results)
    assert not (tmp_path / "r.json").exists()


def test_format_table_aligns_two_columns_in_order():
    text = format_table({"short": 1.0, "a_much_longer_key": 123456.789, "n": 7}, title="T")
    lines = text.splitlines()
    assert lines[0] == "T"
    rows = lines[2:]
    assert [r.split()[0] for r in rows] == ["short", "a_much_longer_key", "n"]
    assert len({len(r) for r in rows}) == 1, "values are right-aligned to one width"
    assert rows[1].endswith("123456.789")
    assert rows[2].endswith("7")


# -- host CPU window ------------------------------------------------------------------------------
def _proc_stat(path, user, idle, iowait, steal):
    # user nice system idle iowait irq softirq steal guest guest_nice
    path.write_text(f"cpu  {user} 0 0 {idle} {iowait} 0 0 {steal} 7 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")


def test_host_cpu_window_reports_busy_and_stolen_time_between_its_reads(tmp_path):
    from robot_rl.bench.report import HostCpuWindow

    stat = tmp_path / "stat"
    _proc_stat(stat, user=1000, idle=5000, iowait=100, steal=50)
    window = HostCpuWindow(stat)
    # 400 ticks later: 200 user, 100 idle, 50 iowait, 50 steal (guest time lies inside user)
    _proc_stat(stat, user=1200, idle=5100, iowait=150, steal=100)
    assert window.figures("_w") == {
        "host_cpu_busy_fraction_w": pytest.approx(250 / 400),
        "host_cpu_steal_fraction_w": pytest.approx(50 / 400),
    }
    window.start()  # a new window from here: nothing happened since
    assert window.figures() == {"host_cpu_busy_fraction": -1.0, "host_cpu_steal_fraction": -1.0}


@pytest.mark.parametrize("text", [None, "", "intr 1 2 3\n", "cpu  a b c d e f g h\n", "cpu 1 2\n"])
def test_host_cpu_window_says_minus_one_without_a_readable_proc_stat(tmp_path, text):
    from robot_rl.bench.report import HostCpuWindow

    stat = tmp_path / "stat"
    if text is not None:
        stat.write_text(text)
    figures = HostCpuWindow(stat).figures()
    assert figures == {"host_cpu_busy_fraction": -1.0, "host_cpu_steal_fraction": -1.0}
