"""One command for a whole training session: ``robot-rl session start CONFIG``.

The session starts its parts as child processes, in order, each checked healthy before the next:
1. the robot server (the twin's, when ``robot_server_task`` names a task; a real arm's server runs
   on the robot's machine, and the actor fails clearly if it cannot reach it);
2. the camera publishers (``camera_processes``: RealSense cameras, ``robot-rl cameras publish``);
3. the learner;
4. the actor, which serves the operator console when ``console.enabled`` is set.

Before anything starts, the session refuses a run that already holds a checkpoint unless
``resume`` is set (a second start would otherwise train a fresh agent over the old one), and
checks that every port it will bind is free, saying in one line which field changes it.

Health is judged over sockets, never from log text: a part is up when the ports it binds accept
connections (robot server, cameras, learner), when the console answers HTTP, or, for an actor
without a console, when it is connected to the learner or has written its status file. Each part
may write a status file (``report_status``, path in ``$ROBOT_RL_STATUS_FILE``); the session prints
one status line from them every ``status_period_s`` (steps, episodes, successes, interventions,
updates/s, UTD against its target) and warns when the learner falls behind its UTD target.

Stopping: Ctrl-C, SIGTERM, ``duration_s`` or the actor finishing stops everything in reverse
order with SIGINT to each part's process group, so the actor hands over what it holds and the
learner saves its buffers and a checkpoint; a part that does not stop within ``stop_timeout_s`` is
terminated, then killed. Parts run in their own sessions (a terminal's Ctrl-C reaches only the
supervisor, which stops them in order) and start with SIGINT handled even when the session was
started from a non-interactive shell's background job, which starts with SIGINT ignored.

Every part logs to ``<run>/session/<part>.log`` (appended, one header per start). The config
file (YAML, ``SessionConfig``) names a training config and overrides for it; a sim config runs
everything on the twin on one machine over loopback.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from robot_rl.config import load_config

STATUS_FILE_ENV = "ROBOT_RL_STATUS_FILE"

# How a part starts: `python -m robot_rl ARGS`, with SIGINT turned back into KeyboardInterrupt
# first. A signal ignored by the parent stays ignored across exec, and Python installs no
# KeyboardInterrupt handler for a SIGINT it finds ignored. On Linux the part also gets SIGINT
# when the supervisor dies without stopping it (killed), so it still stops cleanly.
_CHILD = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "signal.signal(signal.SIGTERM, signal.SIG_DFL); "
    "sys.platform.startswith('linux') and __import__('ctypes').CDLL(None).prctl(1, 2); "
    "runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
)


def child_command(args: list[str], module: str = "robot_rl") -> list[str]:
    """The argv that runs ``python -m module ARGS`` with SIGINT and SIGTERM at their defaults."""
    return [sys.executable, "-c", _CHILD.format(module=module), *args]


def report_status(fields: Mapping[str, float | int | str]) -> None:
    """Write this part's status for the session supervisor: ``fields`` as one JSON object,
    replaced atomically at ``$ROBOT_RL_STATUS_FILE``. Does nothing when the part was not started
    by a session. Known fields: learner ``updates``, ``updates_per_s``, ``utd``, ``utd_target``,
    ``steps_received``; actor ``steps``, ``episodes``, ``successes``, ``interventions``,
    ``console_url``."""
    path = os.environ.get(STATUS_FILE_ENV)
    if not path:
        return
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(dict(fields), fh)
    os.replace(tmp, target)


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
    robot_server_args: tuple[str, ...] = ()  # more robot-server flags: --backend franka-sim, ...
    robot_commands: str = "tcp://127.0.0.1:5560"
    robot_state: str = "tcp://127.0.0.1:5561"
    # Camera publishers, each the arguments of one `robot-rl cameras` process, e.g.
    # "publish --camera front=123456 --camera wrist=654321 --resize 128 --endpoint tcp://0.0.0.0:5570"
    camera_processes: tuple[str, ...] = ()
    # Crop boxes by camera id, [X, Y, W, H] in captured pixels before the resize (written by
    # `robot-rl cameras crop --config`); each becomes the --crop of the publish process of it.
    camera_crops: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    health_timeout_s: float = 120.0
    stop_timeout_s: float = 60.0
    status_period_s: float = 5.0  # one status line this often (0: none)
    resume: bool = False  # continue the run's checkpoint; without it a run with one is refused

    def __post_init__(self) -> None:
        for name in ("health_timeout_s", "stop_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)}; must be > 0")
        if self.status_period_s < 0:
            raise ValueError(f"status_period_s={self.status_period_s}; must be >= 0")
        published = [_flag_values(shlex.split(spec), "--camera") for spec in self.camera_processes]
        for camera_id, (x, y, w, h) in self.camera_crops.items():
            if x < 0 or y < 0 or w < 1 or h < 1:
                raise ValueError(f"camera_crops.{camera_id}=[{x}, {y}, {w}, {h}]; need x, y >= 0 "
                                 "and a width and height >= 1 pixel")  # fmt: skip
            if not any(camera_id in ids for ids in published):
                raise ValueError(f"camera_crops.{camera_id}: no camera_processes entry publishes "
                                 f"it (publish --camera {camera_id}=SERIAL)")  # fmt: skip
            for i, spec in enumerate(self.camera_processes):
                if camera_id in _flag_values(shlex.split(spec), "--crop"):
                    raise ValueError(f"camera {camera_id!r} is cropped by both camera_crops and "
                                     f"camera_processes[{i}]'s --crop; keep one")  # fmt: skip

    def camera_args(self, spec: str) -> list[str]:
        """One ``camera_processes`` entry as ``robot-rl cameras`` arguments, with a ``--crop``
        for each camera it publishes that ``camera_crops`` holds."""
        args = shlex.split(spec)
        for camera_id in _flag_values(args, "--camera"):
            box = self.camera_crops.get(camera_id)
            if box is not None:
                args += ["--crop", f"{camera_id}={','.join(map(str, box))}"]
        return args


def _flag_values(args: list[str], flag: str) -> list[str]:
    """The ID of each ``flag ID=VALUE`` (or ``flag=ID=VALUE``) in a ``cameras publish`` argv."""
    if not args or args[0] != "publish":
        return []
    values = [b for a, b in itertools.pairwise(args) if a == flag]
    values += [a.partition("=")[2] for a in args if a.startswith(flag + "=")]
    return [v.partition("=")[0] for v in values]


class SessionError(RuntimeError):
    """A part did not start, or died; the message names it and what its log says."""


class SessionRefusedError(SessionError):
    """The session would harm what exists (a trained run, a busy port); nothing was started."""


class _InterruptedError(Exception):
    """SIGINT or SIGTERM reached the supervisor."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class Part:
    name: str
    process: subprocess.Popen
    log_path: Path
    status_path: Path

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def status(self) -> dict[str, Any]:
        """The part's last ``report_status`` fields ({} before the first)."""
        try:
            value = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class _Bind:
    """A TCP port a part will listen on, and the one line that says how to change it."""

    what: str
    host: str
    port: int
    change: str


class Session:
    """Starts, watches and stops the parts of a session (see the module docstring)."""

    def __init__(self, config: SessionConfig, config_dir: Path, out: TextIO | None = None) -> None:
        from robot_rl.runtime.train import TrainConfig

        self.config = config
        self.train_path = (config_dir / config.train).resolve()
        self.overrides = list(config.set)
        self.train = load_config(TrainConfig, self.train_path, self.overrides)
        self.run_dir = Path(self.train.run_dir) / self.train.run_name
        self.dir = self.run_dir / "session"
        self.parts: list[Part] = []
        self.console_url: str | None = None
        self.out = out
        self._stopping = False
        self._next_starving_warning = 0.0
        self._silent: set[str] = set()  # parts already reported as silent

    def say(self, line: str) -> None:
        """One line for the person running the session (stdout, flushed)."""
        print(f"session: {line}", file=self.out or sys.stdout, flush=True)

    # -- before starting -----------------------------------------------------------------------
    def check_run(self) -> None:
        """Refuse to start a fresh agent over a run that already holds a checkpoint (its learner
        would overwrite it), and a resume with nothing to resume."""
        checkpoint = self.run_dir / "checkpoints" / "latest.pt"
        if checkpoint.exists() and not self.config.resume:
            raise SessionRefusedError(
                f"run {self.run_dir} already holds a trained checkpoint ({checkpoint}); continue "
                "it with --set resume=true, or start a new run with another name in the session "
                "file's set list (name=...)"
            )
        if self.config.resume and not checkpoint.exists():
            raise SessionRefusedError(
                f"resume=true but {self.run_dir} has no checkpoint to resume ({checkpoint} is "
                "missing); drop resume to start this run fresh"
            )

    def binds(self) -> list[_Bind]:
        """Every TCP port a part of this session will listen on."""
        cfg = self.config
        binds: list[_Bind] = []

        def add(what: str, endpoint: str, change: str) -> None:
            parsed = _tcp(endpoint)
            if parsed is not None:
                binds.append(_Bind(what, parsed[0], parsed[1], change))

        if cfg.robot_server_task:
            add("the robot server's commands", cfg.robot_commands, "--set robot_commands=...")
            add("the robot server's state", cfg.robot_state, "--set robot_state=...")
        for i, spec in enumerate(cfg.camera_processes):
            endpoint = _flag(spec, "--endpoint")
            if endpoint:
                add(f"cameras-{i}", endpoint, f"the --endpoint of camera_processes[{i}]")
        add("the learner's transitions", cfg.transitions, "--set transitions=...")
        add("the learner's weights", cfg.weights, "--set weights=...")
        console = self.train.console
        if console.enabled and console.port != 0:
            binds.append(_Bind("the operator console", console.host, console.port,
                               "console.port=... in the session file's set list (0: any free "
                               "port)"))  # fmt: skip
        return binds

    def check_ports(self) -> None:
        """Raise SessionRefusedError naming the first port that another process holds."""
        for bind in self.binds():
            if not _port_free(bind.host, bind.port):
                raise SessionRefusedError(
                    f"port {bind.port} ({bind.what}, {bind.host}) is in use by another process "
                    f"(an earlier session still running?); change it with {bind.change}"
                )

    # -- starting --------------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> Part:
        self.dir.mkdir(parents=True, exist_ok=True)
        log_path = self.dir / f"{name}.log"
        status_path = self.dir / f"{name}.status.json"
        status_path.unlink(missing_ok=True)
        handle = log_path.open("a")
        handle.write(f"\n==== session start {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                     f"robot-rl {shlex.join(args)}\n")  # fmt: skip
        handle.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", STATUS_FILE_ENV: str(status_path)}
        try:
            process = subprocess.Popen(
                child_command(args), stdout=handle, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor only
            )  # fmt: skip
        finally:
            handle.close()
        part = Part(name, process, log_path, status_path)
        self.parts.append(part)
        return part

    def _wait_healthy(self, part: Part, probe: Callable[[], object], what: str) -> object:
        deadline = time.monotonic() + self.config.health_timeout_s
        while time.monotonic() < deadline:
            if part.process.poll() is not None:
                raise SessionError(
                    f"{part.name} exited with code {part.process.returncode} while starting; "
                    f"the end of {part.log_path}:\n{part.tail()}"
                )
            result = probe()
            if result:
                return result
            time.sleep(0.2)
        raise SessionError(
            f"{part.name} did not become healthy ({what}) within {self.config.health_timeout_s} "
            f"s; the end of {part.log_path}:\n{part.tail()}"
        )

    def _network_flags(self, extra: list[str] | None = None) -> list[str]:
        flags = ["--config", str(self.train_path), "--transitions", self.config.transitions,
                 "--weights", self.config.weights, "--keys", self.config.keys_dir]  # fmt: skip
        for item in [*self.overrides, *(extra or [])]:
            flags += ["--set", item]
        if self.config.plaintext:
            flags.append("--plaintext")
        return flags

    def start(self) -> None:
        """Check the run and the ports, then start each part and wait until it is healthy."""
        cfg = self.config
        self.check_run()
        self.check_ports()
        if cfg.robot_server_task:
            args = ["robot-server", "--task", cfg.robot_server_task, "--keys", cfg.keys_dir,
                    "--commands", cfg.robot_commands, "--state", cfg.robot_state]  # fmt: skip
            if cfg.plaintext:
                args.append("--plaintext")
            args += list(cfg.robot_server_args)
            part = self._spawn("robot-server", args)
            self._wait_healthy(part, lambda: _listening(cfg.robot_commands, cfg.robot_state),
                               "commands and state ports listening")  # fmt: skip
        for i, spec in enumerate(cfg.camera_processes):
            part = self._spawn(f"cameras-{i}", ["cameras", *cfg.camera_args(spec)])
            endpoint = _flag(spec, "--endpoint")
            if endpoint and _tcp(endpoint) is not None:
                self._wait_healthy(part, lambda e=endpoint: _listening(e), "publishing")
            else:  # a publisher whose port is not given here: it is up once it reports
                self._wait_healthy(part, lambda p=part: p.status_path.exists(), "status file")
        learner = self._spawn("learner", ["learner", *self._network_flags()]
                              + (["--resume"] if cfg.resume else []))  # fmt: skip
        self._wait_healthy(learner, lambda: _listening(cfg.transitions, cfg.weights),
                           "transitions and weights ports listening")  # fmt: skip
        console = self.train.console
        extra = []
        if console.enabled and console.port == 0:  # choose it here, so it can be probed
            extra.append(f"console.port={_free_port(console.host)}")
        actor = self._spawn("actor", ["actor", *self._network_flags(extra), "--actor-id",
                                      cfg.actor_id, "--steps", str(cfg.actor_steps)])  # fmt: skip
        if console.enabled:
            port = int(extra[0].split("=")[1]) if extra else console.port
            page = f"http://{_url_host(console.host)}:{port}/"
            self._wait_healthy(actor, lambda: _http_answers(page), "console answers HTTP")
            self.console_url = self._console_url(actor) or page
        else:
            learner_port = _tcp(cfg.transitions)
            self._wait_healthy(
                actor,
                lambda: (
                    actor.status_path.exists()
                    or (learner_port is not None and _connected(actor.process.pid, learner_port[1]))
                ),
                "connected to the learner",
            )

    def _console_url(self, actor: Part) -> str | None:
        """The console's URL with its token: from the actor's status file, else the line the
        console prints when it starts (shown to the operator, not used to judge health)."""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            reported = actor.status().get("console_url")
            if isinstance(reported, str) and reported:
                return reported
            printed = [line.split(": ", 1)[1].strip() for line in _read(actor.log_path).splitlines()
                       if line.startswith("operator console: ")]  # fmt: skip
            if printed:
                return printed[-1]
            time.sleep(0.1)
        return None

    # -- running and stopping ------------------------------------------------------------------
    def watch(self, duration_s: float | None = None) -> None:
        """Until ``duration_s``, the actor finishing its steps, or a part dying; prints a status
        line every ``status_period_s``."""
        start = time.monotonic()
        period = self.config.status_period_s
        next_status = start + period if period > 0 else float("inf")
        while duration_s is None or time.monotonic() - start < duration_s:
            for part in self.parts:
                code = part.process.poll()
                if code is None:
                    continue
                if part.name == "actor" and code == 0:
                    self.say("the actor finished its steps")
                    return
                raise SessionError(
                    f"{part.name} stopped unexpectedly (exit code {code}); the end of "
                    f"{part.log_path}:\n{part.tail()}"
                )
            now = time.monotonic()
            if now >= next_status:
                self.say(self.status_line())
                self._warn_if_starving(now)
                self._warn_if_silent()
                next_status = now + period
            time.sleep(0.25)

    def _status_of(self, name: str) -> dict[str, Any]:
        return next((p.status() for p in self.parts if p.name == name), {})

    def status_line(self) -> str:
        """Steps, episodes, successes and interventions (actor); updates/s and UTD against its
        target (learner); '-' for what a part has not reported."""
        actor, learner = self._status_of("actor"), self._status_of("learner")

        def num(fields: dict[str, Any], key: str, fmt: str = "{:.0f}") -> str:
            value = fields.get(key)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            return fmt.format(value) if ok else "-"

        return (
            f"{num(actor, 'steps')} steps, {num(actor, 'episodes')} episodes, "
            f"{num(actor, 'successes')} successes, {num(actor, 'interventions')} intervention "
            f"steps | learner {num(learner, 'updates_per_s', '{:.1f}')} updates/s, UTD "
            f"{num(learner, 'utd', '{:.2f}')} (target {num(learner, 'utd_target', '{:g}')}), "
            f"{num(learner, 'steps_received')} steps stored"
        )

    def _warn_if_starving(self, now: float) -> None:
        learner = self._status_of("learner")
        utd, target = learner.get("utd"), learner.get("utd_target")
        updates = learner.get("updates")
        numbers = all(isinstance(v, int | float) for v in (utd, target, updates))
        if not numbers or not updates or now < self._next_starving_warning:
            return
        if utd < 0.5 * target:  # type: ignore[operator]
            self.say(
                f"warning: the learner is starving: UTD {utd:.2f} against a target of {target:g} "
                "(it updates slower than the actor steps: a faster device, a smaller utd_ratio "
                "or batch, or a slower actor)"
            )
            self._next_starving_warning = now + 60.0

    def _warn_if_silent(self, after_s: float = 60.0) -> None:
        """Say once when a part that reported its status stops reporting while its process
        lives on (a loop that crashed in a process that did not exit, or one stuck)."""
        for part in self.parts:
            try:
                age_s = time.time() - part.status_path.stat().st_mtime
            except OSError:
                continue  # never reported: its health was judged by its sockets
            if age_s > after_s and part.name not in self._silent:
                self._silent.add(part.name)
                self.say(f"warning: {part.name} has not reported for {age_s:.0f} s although "
                         f"its process runs (stuck, or its loop failed?); see "
                         f"{part.log_path}")  # fmt: skip
            elif age_s <= after_s:
                self._silent.discard(part.name)

    def stop(self) -> dict[str, int | None]:
        """SIGINT to each part's process group, actor first; terminate, then kill, what does
        not stop in time. Returns each part's exit code."""
        self._stopping = True
        codes: dict[str, int | None] = {}
        for part in reversed(self.parts):
            process = part.process
            if process.poll() is None:
                self.say(f"stopping {part.name}")
                _signal_group(process, signal.SIGINT)
                try:
                    process.wait(self.config.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    self.say(f"{part.name} did not stop within {self.config.stop_timeout_s:.0f} "
                             "s; terminating it")  # fmt: skip
                    _signal_group(process, signal.SIGTERM)
                    try:
                        process.wait(10)
                    except subprocess.TimeoutExpired:
                        _signal_group(process, signal.SIGKILL)
                        process.wait()
            codes[part.name] = process.returncode
        return codes

    def run(self, duration_s: float | None = None) -> int:
        """Start, watch and stop, printing what happens; SIGINT and SIGTERM stop the session.
        Returns 0 after a clean run, 1 when a part failed, 2 when the session refused to start."""
        self.say(f"logs in {self.dir}; Ctrl-C stops everything cleanly")
        code = 0
        with self._signals_stop():
            try:
                self.start()
                if self.console_url:
                    self.say(f"operator console at {self.console_url}")
                self.say("all parts are up")
                self.watch(duration_s)
            except SessionRefusedError as exc:
                self.say(str(exc))
                code = 2
            except SessionError as exc:
                self.say(str(exc))
                code = 1
            except (_InterruptedError, KeyboardInterrupt) as exc:
                self.say(f"stopping ({exc or 'SIGINT'})")
            finally:
                codes = self.stop()
                if codes:
                    self.say(f"stopped; exit codes {codes}")
        return code

    @contextlib.contextmanager
    def _signals_stop(self) -> Iterator[None]:
        """SIGINT and SIGTERM raise _InterruptedError once (later ones, while the parts stop, are
        noted and ignored); installed even where SIGINT was inherited as ignored."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: object) -> None:
            if self._stopping:
                self.say(f"{signal.Signals(signum).name}: already stopping the parts")
                return
            self._stopping = True
            raise _InterruptedError(signum)

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, old in previous.items():
                signal.signal(s, old)


def load_session(path: str | Path, overrides: list[str] | None = None) -> Session:
    path = Path(path)
    config = load_config(SessionConfig, path, overrides or [])
    return Session(config, path.parent)


# -- sockets -----------------------------------------------------------------------------------
def _tcp(endpoint: str) -> tuple[str, int] | None:
    """(host, port) of a ``tcp://host:port`` endpoint ('*' as 0.0.0.0); None for anything else
    (ipc://, a port chosen at bind time)."""
    if not endpoint.startswith("tcp://"):
        return None
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    if not port.isdigit() or int(port) == 0 or not host:
        return None
    host = host.strip("[]")
    return ("0.0.0.0" if host == "*" else host), int(port)


def _flag(spec: str, name: str) -> str | None:
    """The value of ``name`` in a shell-quoted argument string."""
    args = shlex.split(spec)
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _probe_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "localhost") else host


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _port_free(host: str, port: int) -> bool:
    """Whether this machine could listen on (host, port) now. A host that is not this machine's
    (a remote robot) counts as free: nothing here binds it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZMQ and aiohttp bind
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno not in (errno.EADDRINUSE, errno.EACCES)
    return True


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _listening(*endpoints: str) -> bool:
    """Whether every tcp endpoint accepts a connection (its part has bound it)."""
    for endpoint in endpoints:
        parsed = _tcp(endpoint)
        if parsed is None:
            continue
        try:
            with socket.create_connection((_probe_host(parsed[0]), parsed[1]), timeout=1.0):
                pass
        except OSError:
            return False
    return True


def _http_answers(url: str) -> bool:
    """Whether an HTTP server answers at ``url`` (any status: the console refuses a page
    request without its token, and that refusal is an answer)."""
    try:
        with urllib.request.urlopen(url, timeout=2):  # our own console, on this machine
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _connected(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds an established TCP connection to ``port`` (psutil, when
    installed; without it only the part's status file counts)."""
    try:
        import psutil
    except ImportError:
        return False
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return False
    return any(
        c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
        for c in connections
    )


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    """Send ``signum`` to the part's process group (it leads its own session), so what it
    started stops too; to the process alone if the group is gone."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        return
    except PermissionError:
        process.send_signal(signum)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
