"""What the CLI says: an error once, plainly (no logger names); no pybullet build banner; a busy
console port refused at start in one line, before anything slow runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from robot_rl.sim import PYBULLET_BANNER, import_without_banner

from robot_rl import cli

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120, check=False)  # fmt: skip


def test_a_config_error_is_printed_once_without_logger_names(tmp_path: Path) -> None:
    config = tmp_path / "session.yaml"
    config.write_text("warp_drive: true\n")
    done = _run("-m", "robot_rl", "session", "start", str(config))
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr  # once: not also logged where it was raised
    assert lines[0].startswith("robot-rl: error: unknown key(s) warp_drive")
    assert "robot_rl." not in lines[0] and "ERROR" not in lines[0]
    assert done.stdout == ""


def test_importing_the_twin_prints_no_pybullet_banner() -> None:
    done = _run("-c", "import robot_rl.sim.twin; print('imported')")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "imported\n"
    assert "pybullet build time" not in done.stderr and done.stderr == ""


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> str:
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_only_the_banner_is_dropped_the_rest_of_an_import_s_output_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    name = _module(tmp_path, monkeypatch, "h9_noisy_a", (
        "import os\n"
        "os.write(2, b'noisy build time: Jan 1\\nwarning: real problem\\n')\n"
        "os.write(1, b'noisy build time: again\\nhello\\n')\n"
        "VALUE = 7\n"
    ))  # fmt: skip
    module = import_without_banner(name, b"noisy build time:")
    assert module.VALUE == 7
    out, err = capfd.readouterr()
    assert (out, err) == ("hello\n", "warning: real problem\n")


def test_a_failing_import_still_raises_and_its_output_is_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    name = _module(tmp_path, monkeypatch, "h9_noisy_b", (
        "import os\n"
        "os.write(2, b'pybullet build time: x\\nlibGL: cannot open display\\n')\n"
        "raise ImportError('no display')\n"
    ))  # fmt: skip
    with pytest.raises(ImportError, match="no display"):
        import_without_banner(name, PYBULLET_BANNER)
    assert capfd.readouterr().err == "libGL: cannot open display\n"
    os.write(2, b"after\n")  # fd 2 is back where it was
    assert capfd.readouterr().err == "after\n"


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another 'process' listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


class _MustNotStart:
    """Stands in for a session/actor: counts construction, which the port check must prevent."""

    made = 0

    def __init__(self, *args: object, **kwargs: object) -> None:
        type(self).made += 1
        raise AssertionError("started despite a busy console port")


def _one_line_port_error(caplog: pytest.LogCaptureFixture, port: int, change: str) -> None:
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert f"port {port} (the operator console, 127.0.0.1) is in use" in errors[0]
    assert change in errors[0]


def test_train_refuses_a_busy_console_port_before_it_starts(
    busy_port: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:  # fmt: skip
    import robot_rl.runtime.train as train

    monkeypatch.setattr(train, "TrainingSession", _MustNotStart)
    _MustNotStart.made = 0
    argv = ["train", "--task", "reach", "--obs", "state", "--set", "console.enabled=true",
            "--set", f"console.port={busy_port}", "--set", f"run_dir={tmp_path}"]  # fmt: skip
    assert cli.main(argv) == 2
    assert _MustNotStart.made == 0
    _one_line_port_error(caplog, busy_port, "--set console.port=PORT")
    assert not list(tmp_path.iterdir())  # no run directory was made


def test_the_actor_refuses_a_busy_console_port_before_it_starts(
    busy_port: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import robot_rl.runtime.distributed as distributed

    monkeypatch.setattr(distributed, "Actor", _MustNotStart)
    _MustNotStart.made = 0
    argv = ["actor", "--plaintext", "--set", "console.enabled=true",
            "--set", f"console.port={busy_port}"]  # fmt: skip
    assert cli.main(argv) == 2
    assert _MustNotStart.made == 0
    _one_line_port_error(caplog, busy_port, "--set console.port=PORT")


def test_a_free_or_any_console_port_passes_the_check(busy_port: int) -> None:
    from robot_rl.cli.flags import check_console_port, port_free
    from robot_rl.console.server import ConsoleConfig

    assert not port_free("127.0.0.1", busy_port)
    check_console_port(ConsoleConfig(enabled=True, port=0))  # any free port: nothing to check
    check_console_port(ConsoleConfig(enabled=False, port=busy_port))  # no console: not checked
    with pytest.raises(cli.CliError, match=f"port {busy_port} .*--console-port PORT"):
        check_console_port(ConsoleConfig(enabled=True, port=busy_port), "--console-port PORT")


def test_train_resume_of_a_moved_run_continues_in_its_new_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    import yaml

    import robot_rl.runtime.train as train
    from robot_rl.config import to_dict
    from robot_rl.runtime.config import TrainConfig

    original = TrainConfig(run_dir=str(tmp_path / "old"), name="first", env_steps=100)
    moved = tmp_path / "new" / "moved"
    moved.mkdir(parents=True)
    (moved / "config.yaml").write_text(yaml.safe_dump(to_dict(original), sort_keys=False))
    started: list[tuple[TrainConfig, bool]] = []

    class Session:
        def __init__(self, config: TrainConfig, resume: bool) -> None:
            started.append((config, resume))
            self.dir = config.run_path

        def run(self) -> dict[str, float]:
            return {}

    monkeypatch.setattr(train, "TrainingSession", Session)
    argv = ["train", "--set", f"run_dir={tmp_path / 'new'}", "--name", "moved", "--resume",
            "--steps", "300", "--seed", "9"]  # fmt: skip
    assert cli.main(argv) == 0
    ((config, resume),) = started
    assert resume and config.run_path == moved  # not back into old/first
    # The run's own config, but for its place and the grown step budget (--seed is ignored).
    assert config == dataclasses.replace(original, run_dir=str(moved.parent), name="moved",
                                         env_steps=300)  # fmt: skip


def test_the_learner_refuses_a_busy_endpoint_port_before_it_starts(
    busy_port: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import robot_rl.runtime.distributed as distributed

    monkeypatch.setattr(distributed, "Learner", _MustNotStart)
    _MustNotStart.made = 0
    argv = ["learner", "--plaintext", "--weights", f"tcp://127.0.0.1:{busy_port}"]
    assert cli.main(argv) == 2
    assert _MustNotStart.made == 0
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [f"port {busy_port} (the learner's weights endpoint, 127.0.0.1) is in use by "
                      "another process; pick another with --weights tcp://HOST:PORT (the actors "
                      "pass the same)"]  # fmt: skip
