"""`robot-rl session start`: a sim session (robot server, cameras, learner, actor with the console)
comes up healthy, runs and stops cleanly on its signal even when started from a background
non-interactive shell; a run that holds a checkpoint, or a busy port, is refused before anything
starts; parts start with SIGINT handled; status lines come from the parts' status files."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from robot_rl import cli
from robot_rl.runtime import session as sess
from tests.netutil import free_port

REACH = Path(__file__).parents[2] / "robot_rl" / "configs" / "reach_state.yaml"


def session_file(tmp_path: Path, **extra: object) -> Path:
    commands, state = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    cameras = f"tcp://127.0.0.1:{free_port()}"
    config = {
        "train": str(REACH), "plaintext": True, "robot_server_task": "reach",
        "transitions": f"tcp://127.0.0.1:{free_port()}",
        "weights": f"tcp://127.0.0.1:{free_port()}",
        "robot_commands": commands, "robot_state": state, "health_timeout_s": 90,
        "status_period_s": 2,
        "camera_processes": [f"mirror-twin --task reach --plaintext --size 64 --commands "
                             f"{commands} --state {state} --endpoint {cameras}"],
        "set": [f"run_dir={tmp_path / 'runs'}", "name=s", "demos=2", "console.enabled=true",
                "console.port=0", "interventions=false", "env.remote.plaintext=true",
                f"env.remote.commands={commands}", f"env.remote.state={state}",
                f"env.remote.camera_endpoints=[{cameras}]"],
        **extra,
    }  # fmt: skip
    path = tmp_path / "session.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _wait_listening(port: int, process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the child exited before listening"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on {port} within {timeout_s} s")


def _sigint_ignored(pid: int) -> bool:
    """From /proc: whether SIGINT is in the process's ignored set."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    raise AssertionError("no SigIgn line")


def _in_background_shell(argv: list[str]) -> subprocess.Popen:
    """``argv`` as a background job of a non-interactive bash (which starts it with SIGINT
    ignored); the shell prints the job's pid first and exits with its status."""
    return subprocess.Popen(["bash", "-c", f"{shlex.join(argv)} & echo $!; wait $!"],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_part_handles_sigint_even_when_its_shell_ignored_it() -> None:
    # The premise: a plain background python job of a non-interactive shell ignores SIGINT.
    port = free_port()
    plain = _in_background_shell([sys.executable, "-m", "http.server", "-b", "127.0.0.1",
                                  str(port)])  # fmt: skip
    pid = int(plain.stdout.readline())
    try:
        _wait_listening(port, plain)
        assert _sigint_ignored(pid)
    finally:
        os.kill(pid, signal.SIGTERM)
        plain.wait(10)
    # A part started the way the session starts it stops on SIGINT (KeyboardInterrupt, exit 0).
    port = free_port()
    part = _in_background_shell(sess.child_command(["-b", "127.0.0.1", str(port)], "http.server"))
    pid = int(part.stdout.readline())
    _wait_listening(port, part)
    assert not _sigint_ignored(pid)
    os.kill(pid, signal.SIGINT)
    assert part.wait(10) == 0


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in state  # exited, not yet reaped by its new parent


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_part_stops_when_its_supervisor_is_killed() -> None:
    port = free_port()
    supervisor = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, time\n"
        "from robot_rl.runtime.session import child_command\n"
        f"p = subprocess.Popen(child_command(['-b', '127.0.0.1', '{port}'], 'http.server'))\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)  # fmt: skip
    pid = int(supervisor.stdout.readline())
    try:
        _wait_listening(port, supervisor)
        supervisor.kill()  # no chance to stop its parts
        supervisor.wait(10)
        deadline = time.monotonic() + 10
        while not _gone(pid):
            assert time.monotonic() < deadline, "the part outlived its supervisor"
            time.sleep(0.05)
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_run_holding_a_checkpoint_is_refused_and_a_resume_needs_one(tmp_path, capsys) -> None:
    path = session_file(tmp_path)
    checkpoint = tmp_path / "runs" / "s" / "checkpoints" / "latest.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"28 updates of training")
    assert cli.main(["session", "start", str(path)]) == 2
    out = capsys.readouterr().out
    assert "already holds a trained checkpoint" in out and "--set resume=true" in out
    assert out.count("already holds") == 1  # said once
    assert checkpoint.read_bytes() == b"28 updates of training"
    assert not (tmp_path / "runs" / "s" / "session").exists()  # no part was started
    checkpoint.unlink()
    assert cli.main(["session", "start", str(path), "--set", "resume=true"]) == 2
    assert "no checkpoint to resume" in capsys.readouterr().out


def test_a_busy_port_is_refused_in_one_line_before_anything_starts(tmp_path, capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = session_file(tmp_path, transitions=f"tcp://127.0.0.1:{port}")
        assert cli.main(["session", "start", str(path)]) == 2
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if f"port {port}" in line)
    assert "learner's transitions" in line and "--set transitions=" in line
    assert not (tmp_path / "runs" / "s" / "session").exists()


def test_report_status_writes_json_only_under_a_session(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(sess.STATUS_FILE_ENV, raising=False)
    sess.report_status({"steps": 1})  # not started by a session: nothing to do
    target = tmp_path / "learner.status.json"
    monkeypatch.setenv(sess.STATUS_FILE_ENV, str(target))
    sess.report_status({"updates": 12, "utd": 0.25})
    sess.report_status({"updates": 40, "utd": 0.5})
    assert json.loads(target.read_text()) == {"updates": 40, "utd": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["learner.status.json"]  # no temp left


def test_the_status_line_and_the_starving_warning_come_from_status_files(tmp_path, capsys) -> None:
    session = sess.load_session(session_file(tmp_path))
    session.dir.mkdir(parents=True)
    parts = {}
    for name in ("learner", "actor"):
        parts[name] = sess.Part(name, None, session.dir / f"{name}.log",  # type: ignore[arg-type]
                                session.dir / f"{name}.status.json")  # fmt: skip
    session.parts = list(parts.values())
    assert session.status_line().startswith("- steps, - episodes")  # nothing reported yet
    parts["actor"].status_path.write_text(json.dumps(
        {"steps": 1234, "episodes": 12, "successes": 7, "interventions": 340}))  # fmt: skip
    parts["learner"].status_path.write_text(json.dumps(
        {"updates": 40, "updates_per_s": 5.25, "utd": 0.29, "utd_target": 8,
         "steps_received": 1200}))  # fmt: skip
    line = session.status_line()
    assert line == ("1234 steps, 12 episodes, 7 successes, 340 intervention steps | learner "
                    "5.2 updates/s, UTD 0.29 (target 8), 1200 steps stored")  # fmt: skip
    session._warn_if_starving(now=100.0)
    session._warn_if_starving(now=130.0)  # once a minute at most
    out = capsys.readouterr().out
    assert out.count("the learner is starving: UTD 0.29 against a target of 8") == 1
    parts["learner"].status_path.write_text(json.dumps({"updates": 40, "utd": 7.5,
                                                        "utd_target": 8}))  # fmt: skip
    session._warn_if_starving(now=1000.0)
    assert "starving" not in capsys.readouterr().out
    # A part whose status goes stale while its process lives on is named once.
    old = time.time() - 120
    os.utime(parts["actor"].status_path, (old, old))
    session._warn_if_silent()
    session._warn_if_silent()
    out = capsys.readouterr().out
    assert out.count("actor has not reported for 120 s") == 1 and "learner" not in out


def test_a_bad_session_key_is_a_usage_error(tmp_path: Path, caplog) -> None:
    path = session_file(tmp_path, warp_drive=True)
    assert cli.main(["session", "start", str(path)]) == 2
    assert "warp_drive" in caplog.text


def test_the_shipped_session_configs_load() -> None:
    from robot_rl.config import ConfigError
    from robot_rl.runtime.session import load_session

    configs = Path(__file__).parents[2] / "robot_rl" / "configs"
    sim = load_session(configs / "session_reach_sim.yaml")
    assert sim.config.robot_server_task == "reach" and sim.train.env.remote is not None
    pixels = load_session(configs / "session_pick_cube_pixels_sim.yaml")
    assert pixels.train.console.enabled and pixels.train.env.obs == "pixels"
    with pytest.raises(ConfigError, match="placeholder"):  # the real example must be edited
        load_session(configs / "session_real_example.yaml")
    real = load_session(configs / "session_real_example.yaml", ["set=[console.token=" + "k" * 24
                        + ", env.remote.commands=tcp://10.0.0.2:5560]"])  # fmt: skip
    assert real.train.console.token == "k" * 24


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_part_that_fails_to_start_is_named_with_its_log(tmp_path: Path, capsys) -> None:
    path = session_file(tmp_path, robot_server_task="juggle")
    assert cli.main(["session", "start", str(path)]) == 1
    out = capsys.readouterr().out
    assert "robot-server exited with code 2" in out and "juggle" in out


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_a_sim_session_from_a_background_shell_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    """Started the way a script starts it (a non-interactive shell's background job, SIGINT
    ignored), the session comes up, reports status, and on SIGINT every part stops with 0."""
    out_path = tmp_path / "session.out"
    argv = [sys.executable, "-m", "robot_rl", "session", "start", str(session_file(tmp_path)),
            "--duration", "600"]  # fmt: skip
    command = f"{shlex.join(argv)} > {shlex.quote(str(out_path))} 2>&1"
    shell = subprocess.Popen(["bash", "-c", f"{command} & echo $!; wait $!"],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    pid = int(shell.stdout.readline())
    try:
        deadline = time.monotonic() + 300
        while "learner " not in _lines_after(out_path, "all parts are up"):
            assert shell.poll() is None, out_path.read_text()
            assert time.monotonic() < deadline, out_path.read_text()
            time.sleep(0.5)
        os.kill(pid, signal.SIGINT)
        assert shell.wait(200) == 0, out_path.read_text()
    finally:
        if shell.poll() is None:
            os.kill(pid, signal.SIGTERM)
            shell.wait(100)
    out = out_path.read_text()
    assert "operator console at http://127.0.0.1:" in out and "stopping (SIGINT)" in out
    # Each part stopped on SIGINT, in reverse order, with exit code 0.
    assert "{'actor': 0, 'learner': 0, 'cameras-0': 0, 'robot-server': 0}" in out
    run = tmp_path / "runs" / "s"
    assert (run / "checkpoints" / "latest.pt").is_file()  # the learner saved on the way out
    assert list((run / "episodes").glob("episode_*.npz"))  # the actor's steps reached the disk
    published = (run / "session" / "cameras-0.log").read_text()
    assert "published" in published and "published 0 frames" not in published


def _lines_after(path: Path, marker: str) -> str:
    """The output after ``marker`` (a status line names the learner)."""
    text = path.read_text() if path.exists() else ""
    return text.split(marker, 1)[1] if marker in text else ""
