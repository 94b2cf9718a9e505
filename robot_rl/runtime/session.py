"""One command for a whole training session: ``robot-rl session start CONFIG``.

The session starts its parts as child processes, in order, each checked healthy before the next:
1. the robot server (the twin's, when ``robot_server_task`` names a task; a real arm's server runs
   on the robot's machine, and the actor fails clearly if it cannot reach it);
2. the camera publishers (``camera_processes``: RealSense cameras, ``robot-rl cameras publish``);
3. the learner;
4. the actor, which serves the operator console when ``console.enabled`` is set (the session then
   checks the page answers and prints its URL).
Every part logs to ``<run>/session/<part>.log``. If a part dies, the session says which and shows
the end of its log, then stops the others. Ctrl-C (or ``duration_s``) stops everything in the
reverse order with SIGINT, so the actor hands over what it holds and the learner saves its buffers
(episode files) and a checkpoint; a part that does not stop within ``stop_timeout_s`` is
terminated, then killed.

The config file (YAML, ``SessionConfig``) names a training config and overrides for it; a sim
config runs everything on the twin on one machine over loopback.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from robot_rl.config import load_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionConfig:
    train: str  # a TrainConfig YAML, relative to this file
    set: tuple[str, ...] = ()  # TrainConfig overrides (key.sub=value), for learner and actor
    plaintext: bool = False  # no CURVE: loopback only (a sim session on one machine)
    keys_dir: str = "keys"
    transitions: str = "tcp://127.0.0.1:5555"
    weights: str = "tcp://127.0.0.1:5556"
    actor_id: str = "actor-0"
    actor_steps: int = 1_000_000
    robot_server_task: str = ""  # start the twin's robot server for this task ("" : none)
    robot_commands: str = "tcp://127.0.0.1:5560"
    robot_state: str = "tcp://127.0.0.1:5561"
    # Camera publishers, each the arguments of one `robot-rl cameras` process, e.g.
    # "publish --camera front=123456 --camera wrist=654321 --resize 128 --endpoint tcp://0.0.0.0:5570"
    camera_processes: tuple[str, ...] = ()
    health_timeout_s: float = 120.0
    stop_timeout_s: float = 60.0
    resume: bool = False


class SessionError(RuntimeError):
    """A part did not start, or died; the message names it and what its log says."""


@dataclass
class Part:
    name: str
    process: subprocess.Popen
    log_path: Path

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


class Session:
    """Starts, watches and stops the parts of a session (see the module docstring)."""

    def __init__(self, config: SessionConfig, config_dir: Path) -> None:
        from robot_rl.runtime.train import TrainConfig

        self.config = config
        self.train_path = (config_dir / config.train).resolve()
        self.overrides = list(config.set)
        self.train = load_config(TrainConfig, self.train_path, self.overrides)
        self.dir = Path(self.train.run_dir) / self.train.run_name / "session"
        self.parts: list[Part] = []
        self.console_url: str | None = None

    # -- starting --------------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> Part:
        self.dir.mkdir(parents=True, exist_ok=True)
        log_path = self.dir / f"{name}.log"
        handle = log_path.open("w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            [sys.executable, "-m", "robot_rl", *args], stdout=handle, stderr=subprocess.STDOUT,
            start_new_session=True, env=env,  # Ctrl-C reaches the session only; it stops parts
        )  # fmt: skip
        handle.close()
        part = Part(name, process, log_path)
        self.parts.append(part)
        log.info("session: started %s (pid %d), log %s", name, process.pid, log_path)
        return part

    def _wait_healthy(self, part: Part, probe, what: str) -> object:  # noqa: ANN001
        deadline = time.monotonic() + self.config.health_timeout_s
        while time.monotonic() < deadline:
            if part.process.poll() is not None:
                raise SessionError(
                    f"{part.name} exited with code {part.process.returncode} while starting; "
                    f"the end of {part.log_path}:\n{part.tail()}"
                )
            result = probe()
            if result:
                log.info("session: %s is up (%s)", part.name, what)
                return result
            time.sleep(0.2)
        raise SessionError(
            f"{part.name} did not become healthy ({what}) within {self.config.health_timeout_s} "
            f"s; the end of {part.log_path}:\n{part.tail()}"
        )

    def _network_flags(self, key: str) -> list[str]:
        flags = ["--config", str(self.train_path), "--transitions", self.config.transitions,
                 "--weights", self.config.weights, "--keys", self.config.keys_dir]  # fmt: skip
        for item in self.overrides:
            flags += ["--set", item]
        if self.config.plaintext:
            flags.append("--plaintext")
        return flags

    def start(self) -> None:
        cfg = self.config
        if cfg.robot_server_task:
            args = ["robot-server", "--task", cfg.robot_server_task, "--keys", cfg.keys_dir,
                    "--commands", cfg.robot_commands, "--state", cfg.robot_state]  # fmt: skip
            if cfg.plaintext:
                args.append("--plaintext")
            part = self._spawn("robot-server", args)
            self._wait_healthy(part, lambda: "robot server:" in _read(part.log_path),
                               "serving the twin")  # fmt: skip
        for i, spec in enumerate(cfg.camera_processes):
            part = self._spawn(f"cameras-{i}", ["cameras", *shlex.split(spec)])
            self._wait_healthy(part, lambda part=part: "Ctrl-C stops" in _read(part.log_path),
                               "publishing")  # fmt: skip
        learner = self._spawn("learner", ["learner", *self._network_flags("learner")]
                              + (["--resume"] if cfg.resume else []))  # fmt: skip
        self._wait_healthy(learner, lambda: "learner: serving" in _read(learner.log_path),
                           "serving actors")  # fmt: skip
        actor = self._spawn("actor", ["actor", *self._network_flags(cfg.actor_id), "--actor-id",
                                      cfg.actor_id, "--steps", str(cfg.actor_steps)])  # fmt: skip
        if self.train.console.enabled:
            url = self._wait_healthy(actor, lambda: _console_url(actor.log_path), "console URL")
            self._wait_healthy(actor, lambda: _http_ok(str(url)), "console page answers")
            self.console_url = str(url)
        else:
            self._wait_healthy(actor, lambda: "actor: acting" in _read(actor.log_path), "acting")

    # -- running and stopping ------------------------------------------------------------------
    def watch(self, duration_s: float | None = None) -> None:
        """Until Ctrl-C, ``duration_s``, the actor finishing its steps, or a part dying."""
        start = time.monotonic()
        while duration_s is None or time.monotonic() - start < duration_s:
            for part in self.parts:
                code = part.process.poll()
                if code is None:
                    continue
                if part.name == "actor" and code == 0:
                    log.info("session: the actor finished its steps")
                    return
                raise SessionError(
                    f"{part.name} stopped unexpectedly (exit code {code}); the end of "
                    f"{part.log_path}:\n{part.tail()}"
                )
            time.sleep(0.5)

    def stop(self) -> dict[str, int | None]:
        """SIGINT to each part, actor first; terminate, then kill, what does not stop."""
        codes: dict[str, int | None] = {}
        for part in reversed(self.parts):
            process = part.process
            if process.poll() is None:
                log.info("session: stopping %s", part.name)
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(self.config.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    log.error("session: %s did not stop within %.0f s; terminating it",
                              part.name, self.config.stop_timeout_s)  # fmt: skip
                    process.terminate()
                    try:
                        process.wait(10)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
            codes[part.name] = process.returncode
        return codes


def load_session(path: str | Path, overrides: list[str] | None = None) -> Session:
    path = Path(path)
    config = load_config(SessionConfig, path, overrides or [])
    return Session(config, path.parent)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _console_url(path: Path) -> str | None:
    for line in _read(path).splitlines():
        if line.startswith("operator console: "):
            return line.split(": ", 1)[1].strip()
    return None


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # our own console
            return response.status == 200
    except OSError:
        return False
