"""The robot server: the 1 kHz controller loop served over ZMQ, and the client that talks to it.

Server (one thread owns the robot; nothing else touches it):
- ticks the control loop at its period on wall-clock deadlines (the twin is stepped in lockstep,
  paced to real time, so its sim clock runs with the wall clock);
- between ticks, takes targets and requests from a ROUTER socket and publishes the state on a
  PUB socket at ``state_rate_hz`` (>= 100 Hz);
- targets ("robot_target": arrays pos_m (3), quat_xyzw (4), optional twist (6) feedforward and
  stiffness (6, a gain change the loop ramps smoothly); meta gripper "open" / "close" / None) are
  validated by the loop (finite, unit quaternion, inside the workspace, bounded twist); a bad one
  is rejected, logged and counted in the state (``rejected_targets``), never sent to the arm;
- requests ("request": meta op, a wall-clock ``deadline``) get a "reply" with the same seq; a
  request already past its deadline is refused, not run late. Ops: ping, status, stop (anyone);
  acquire, release, reset (meta options {"seed": int}), joint_mode (meta q_rad, 7 floats),
  clear_stop, recover (clears a real arm's fault; backends with ``recover()``) (the owner only).
  ``joint_mode`` switches the loop to joint impedance toward ``q_rad`` (e.g. a home posture),
  checked against the joint limits and, through forward kinematics, the workspace box; the next
  pose target switches it back to Cartesian;
- the loop's watchdog holds the arm 100 ms after the last target and damps it at 500 ms, so a
  client that stops sending (crash, network) leaves the arm safe; a "heartbeat" between targets
  keeps a tracking arm tracking (it never wakes a holding one).

Who may do what. Every message carries meta ``session`` (a random 32-hex-digit id a client makes
once) and a header ``seq`` that grows with every message of that session:
- one session owns control: the first to send a target, a heartbeat or an owner-only request
  while nobody owns it (or ``acquire``), until it sends ``release`` or is silent for
  ``owner_timeout_s`` (by then the watchdog has damped the arm). Other sessions may watch the
  state stream, ``ping``, ask ``status`` and send ``stop``; their targets, heartbeats, resets,
  joint moves and ``clear_stop`` are refused and counted (``refused_not_owner``). So a software
  stop is cleared by the owner, which is where the console's explicit operator action goes;
- a message whose seq is not above the last one seen from its session is refused as a replay
  (ZMQ keeps one connection's messages in order, so a live client never trips this). On
  plaintext this stops a captured request from being run again; CURVE (mandatory off loopback)
  keeps others from reading or forging sessions at all.

No message ends the loop: a malformed one is dropped and counted (``rejected_messages``), a bad
request gets an error reply, and an error while handling one is logged, counted
(``handler_errors``) and answered. A supervisor around the tick latches a software stop (the
loop damps the arm) when ``backend.tick()`` raises, and restarts the serving loop if the loop
itself fails; only a BaseException (interpreter exit) ends the thread, with the arm stopped first.

State message ("robot_state") arrays: q, dq, tau (7), ee_pos (3), ee_quat (4, xyzw), ee_twist
(6), and on a sim backend ``features`` (the task's); meta: gripper_width_m, command_age_s,
stamp_s, published_wall_s (the host's wall clock as the state was sent), mode
(``robot_rl.controllers.watchdog.ControlMode``), target_age_s (the watchdog's clock),
rejected_targets, faults, stopped, tick_failures, ``success`` on a sim backend, and ``ext_wrench``
(``interfaces.EXT_WRENCH_META_KEY``: 6 floats, N and Nm, base frame) where the backend measures it
(the twin's contact sum, a Franka's O_F_ext_hat_K). For the operator console: loop_hz (the
control loop's measured rate over the last second: the backend's ``loop_ticks`` counter when its
status has one, else the server's own ticks), loop_hz_target (the backend's, else 1 / its period),
warnings (the newest 5 warning lines of the server, the control loop and the backend, as
"HH:MM:SS text") and warnings_total.

``RobotClient`` keeps the newest state (``latest``), sends targets without blocking and makes
requests with deadlines; it is safe to call from several threads.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import zmq

from robot_rl.controllers.targets import CartesianTarget, InvalidTargetError, JointTarget
from robot_rl.endpoints import DEFAULT_ENDPOINTS
from robot_rl.interfaces import RobotState, wrench_meta
from robot_rl.transport.codec import CodecError, Message, decode, encode, quote
from robot_rl.transport.robot_status import RecentWarnings, TickRate
from robot_rl.transport.security import SecurityConfig, secure_client, secure_server

log = logging.getLogger(__name__)

GripperCommand = Literal["open", "close"] | None


class RobotBackend(Protocol):
    """What the server drives: a control loop over a robot (the twin scene, or a real arm).

    The server calls every method from its one thread, never concurrently. Errors:
    - ``set_target`` and ``set_joint_target`` raise ``InvalidTargetError`` (a ValueError) for a
      target they refuse (non-finite, outside the joint limits or the workspace, under a software
      stop); the arm keeps its previous target. Nothing unchecked may reach the arm: the backend
      applies the workspace, speed, torque and torque-rate limits (``ControlLoop`` does);
    - ``reset`` raises ValueError naming the option for bad ``options``;
    - ``tick`` may raise: the server then latches ``software_stop(True)`` and keeps ticking;
    - ``software_stop(True)`` must make the arm damp to rest (or brake) and refuse targets until
      ``software_stop(False)``; it must not raise while the robot can still be reached.
    """

    period_s: float  # control period, s (the server ticks at this rate on wall-clock deadlines)

    def tick(self) -> Any:
        """Run one control period (read state, compute, command the arm)."""
        ...

    def set_target(self, target: CartesianTarget, gripper: GripperCommand) -> None:
        """Queue a Cartesian target (base frame) and a gripper command (None keeps the last)."""
        ...

    def keep_alive(self) -> None:
        """Refresh the watchdog of a tracking arm without a new target (never wakes a held one)."""
        ...

    def state(self) -> RobotState:
        """The newest measured state."""
        ...

    def status(self) -> dict[str, Any]:
        """Plain, finite values for the state meta: law, mode (int ControlMode), target_age_s,
        rejected_targets, faults, stopped, and on a sim backend success."""
        ...

    def reset(self, options: dict[str, Any]) -> dict[str, Any]:
        """Start an episode (a sim re-randomizes from ``options["seed"]``); returns plain values."""
        ...

    def set_joint_target(self, q_rad: np.ndarray) -> None:
        """Joint impedance toward ``q_rad`` (7,) rad; raises InvalidTargetError if refused."""
        ...

    def software_stop(self, stop: bool) -> None:
        """Latch (True) or clear (False) the software stop."""
        ...


RESET_OPTIONS = frozenset({"seed"})


class SceneBackend:
    """A ``robot_rl.sim.scene.TwinScene`` as a backend: reset re-randomizes the task from a seed."""

    def __init__(self, scene: Any) -> None:
        from robot_rl.sim.mirror import body_poses  # resolved once: state goes out at 200 Hz

        self.scene = scene
        self.period_s = scene.config.twin.period_s
        self._body_poses = body_poses

    def tick(self) -> Any:
        return self.scene.loop.tick()

    def set_target(self, target: CartesianTarget, gripper: GripperCommand) -> None:
        self.scene.loop.set_cartesian_target(target)
        self.scene.command_gripper(gripper)

    def keep_alive(self) -> None:
        self.scene.loop.keep_alive()

    def state(self) -> RobotState:
        return self.scene.state()

    def status(self) -> dict[str, Any]:
        loop = self.scene.loop
        s = loop.status
        return {
            "law": s.law if s else "cartesian",
            "mode": int(s.mode) if s else 1,
            "target_age_s": float(s.target_age_s) if s else 0.0,
            "rejected_targets": int(loop.rejected_targets),
            "faults": int(loop.faults),
            "success": bool(self.scene.success()),
            "stopped": bool(loop.stopped),
            **wrench_meta(self.scene.twin.external_wrench()),
        }

    def software_stop(self, stop: bool) -> None:
        if stop:
            self.scene.loop.software_stop()
        else:
            self.scene.loop.clear_stop()

    def features(self) -> np.ndarray:
        return np.asarray(self.scene.task.features(self.scene.twin), np.float64)

    def body_poses(self) -> np.ndarray:
        """(N, 7) poses of the scene's other bodies, for render-only mirrors (sim.mirror)."""
        return self._body_poses(self.scene.twin)

    def set_joint_target(self, q_rad: np.ndarray) -> None:
        self.scene.loop.set_joint_target(JointTarget(q_rad))

    def reset(self, options: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(str(k) for k in options if k not in RESET_OPTIONS)
        if unknown:
            raise ValueError(
                f"reset options {quote(unknown)} unknown; allowed: {sorted(RESET_OPTIONS)}"
            )
        seed = options.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ValueError(f"reset seed={quote(seed)}; expected an int in [0, 2**63)")
        self.scene.reset(seed)
        return {"seed": seed}


@dataclass(frozen=True)
class RobotEndpoints:
    commands: str = DEFAULT_ENDPOINTS.robot_commands  # ROUTER: targets and requests
    state: str = DEFAULT_ENDPOINTS.robot_state  # PUB: the state stream


# Requests anyone may make; the rest need control (see the module docstring).
OPEN_OPS = ("ping", "status", "stop")
OWNER_OPS = ("acquire", "release", "reset", "joint_mode", "clear_stop", "recover")
KNOWN_OPS = OPEN_OPS + OWNER_OPS
_SESSION = re.compile(r"[0-9a-f]{32}")
MAX_SESSIONS = 1024  # replay windows kept (least recently heard forgotten first; never the owner)
MAX_RESTARTS_PER_S = 10  # serving-loop failures within a second before the server gives up
# A serving loop this many ticks behind its wall-clock schedule re-anchors; less behind, it runs
# its ticks back to back until it is on time again. A twin's clock (its ticks) can therefore catch
# up on the wall by as much as this many periods: a target's age, counted on that clock, can reach
# a threshold up to this much wall time early (20 ms at 1 kHz).
CATCH_UP_TICKS = 20


@dataclass
class ServerStats:
    """Counters, all bounded: ``requests`` has one key per known op plus "other"."""

    ticks: int = 0
    states_published: int = 0
    targets: int = 0
    rejected_messages: int = 0  # malformed, or refused targets and heartbeats
    refused_not_owner: int = 0
    replayed: int = 0
    handler_errors: int = 0  # an exception while handling one message (answered, loop runs on)
    tick_failures: int = 0  # backend.tick() raised: software stop latched
    loop_restarts: int = 0
    publish_errors: int = 0
    late_ticks: int = 0
    requests: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys((*KNOWN_OPS, "other"), 0)
    )


class _RefusedError(Exception):
    """A message the server answers with an error (its text goes into the reply)."""


class RobotServer:
    """Serves ``backend`` (see module docstring). ``start()`` runs it on its own thread."""

    def __init__(
        self,
        backend: RobotBackend,
        endpoints: RobotEndpoints,
        security: SecurityConfig,
        state_rate_hz: float = 200.0,
        context: zmq.Context | None = None,
        owner_timeout_s: float = 2.0,
    ) -> None:
        if state_rate_hz < 100:
            raise ValueError(f"state_rate_hz={state_rate_hz}; publish at >= 100 Hz")
        if not owner_timeout_s > 0:
            raise ValueError(f"owner_timeout_s={owner_timeout_s}; expected > 0 s")
        self.backend = backend
        self.state_period_s = 1.0 / state_rate_hz
        self.owner_timeout_s = owner_timeout_s
        self.stats = ServerStats()
        self._ctx = context or zmq.Context.instance()
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.linger = 0
        self._router.maxmsgsize = 1 << 20
        self._router.sndhwm = 100
        secure_server(self._router, endpoints.commands, security)
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.linger = 0
        self._pub.sndhwm = 10
        secure_server(self._pub, endpoints.state, security)
        self.commands_endpoint = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.state_endpoint = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state_seq = 0
        self._sessions: OrderedDict[str, int] = OrderedDict()  # session -> last seq
        self._owner: str | None = None
        self._owner_heard_s = 0.0
        self._restarts: list[float] = []
        self.error: BaseException | None = None
        self._loop_rate = TickRate()
        self.warnings = RecentWarnings()  # attached while the server runs

    def start(self) -> None:
        self.warnings.attach()
        self._thread = threading.Thread(target=self._run, name="robot-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.warnings.detach()
        self._router.close(linger=0)
        self._pub.close(linger=0)
        if self.error is not None:
            raise RuntimeError("robot server stopped on an error") from self.error

    def wait(self, duration_s: float | None = None, poll_s: float = 0.2) -> None:
        """Block while the server serves: until ``duration_s`` has passed (None: no limit), the
        serving loop has stopped on an error, or ``stop`` is called. Ctrl-C reaches the caller."""
        deadline = None if duration_s is None else time.monotonic() + duration_s
        while self.error is None and not self._stop.is_set():
            left_s = poll_s if deadline is None else min(poll_s, deadline - time.monotonic())
            if left_s <= 0:
                return
            self._stop.wait(left_s)

    @property
    def alive(self) -> bool:
        """Whether the serving thread runs."""
        return self._thread is not None and self._thread.is_alive()

    # -- the supervisor --------------------------------------------------------------------------
    def _run(self) -> None:
        """Serve until stopped; restart the serving loop if it fails, stopping the arm first."""
        try:
            while not self._stop.is_set():
                try:
                    self._serve()
                except Exception as exc:
                    log.exception("robot server: the serving loop failed; arm stopped, restarting")
                    self._fail_safe(f"the serving loop failed: {type(exc).__name__}")
                    self.stats.loop_restarts += 1  # counted once the stop is latched
                    now = time.monotonic()
                    self._restarts = [t for t in self._restarts if now - t < 1.0] + [now]
                    if len(self._restarts) > MAX_RESTARTS_PER_S:
                        self.error = exc
                        log.critical("robot server: failing repeatedly; the arm stays stopped")
                        return
        except BaseException as exc:  # interpreter exit: stop the arm, surface it through stop()
            self.error = exc
            self._fail_safe("the server thread is ending")
            raise

    def _fail_safe(self, why: str, quiet: bool = False) -> None:
        """Latch the software stop (the loop damps the arm to rest); the owner must clear it."""
        try:
            self.backend.software_stop(True)
            if not quiet:
                log.error("robot server: %s; software stop latched (the owner clears it)", why)
        except Exception:
            log.critical("robot server: %s, and the software stop failed too", why, exc_info=True)

    def _serve(self) -> None:
        period = self.backend.period_s
        next_tick = time.monotonic()
        next_state = next_tick
        while not self._stop.is_set():
            self._drain(max_messages=8)
            try:
                self.backend.tick()
                self.stats.ticks += 1
            except Exception as exc:
                self.stats.tick_failures += 1
                loud = self.stats.tick_failures == 1 or self.stats.tick_failures % 1000 == 0
                if loud:
                    log.error("robot server: tick failed (%d so far): %s",
                              self.stats.tick_failures, quote(exc, 200))  # fmt: skip
                self._fail_safe("a control tick failed", quiet=not loud)
            now = time.monotonic()
            if now >= next_state:
                self._publish_state()
                next_state += self.state_period_s
                if next_state < now:
                    next_state = now + self.state_period_s
            next_tick += period
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -CATCH_UP_TICKS * period:  # far behind (a slow host): re-anchor
                self.stats.late_ticks += 1
                next_tick = time.monotonic()

    # -- inputs ----------------------------------------------------------------------------------
    def _drain(self, max_messages: int) -> None:
        for _ in range(max_messages):
            try:
                frames = self._router.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            identity, body = frames[0], frames[1:]
            try:
                message = decode(body, 1 << 20, frozenset({"robot_target", "request", "heartbeat"}))
            except CodecError as exc:
                self.stats.rejected_messages += 1
                log.warning("robot server: dropped a malformed message: %s", exc)
                continue
            try:
                self._handle(identity, message)
            except Exception as exc:  # a bug or a backend error: answer, count, run on
                self.stats.handler_errors += 1
                log.exception("robot server: error handling a %s", message.type)
                if message.type == "request":
                    error = f"server error: {quote(exc, 200)}"
                    self._reply(identity, message.seq, {"ok": False, "error": error})

    def _handle(self, identity: bytes, message: Message) -> None:
        op = message.meta.get("op") if message.type == "request" else None
        if message.type == "request":
            key = op if isinstance(op, str) and op in KNOWN_OPS else "other"
            self.stats.requests[key] += 1
        try:
            session = self._admit(message)
            if message.type == "robot_target":
                self._control(session, "send targets")
                self._target(message)
            elif message.type == "heartbeat":
                self._control(session, "send heartbeats")
                self.backend.keep_alive()
            else:
                self._reply(identity, message.seq, self._request(session, op, message.meta))
        except _RefusedError as exc:
            self.stats.rejected_messages += message.type != "request"
            log.warning("robot server: refused a %s: %s", message.type, exc)
            if message.type == "request":
                self._reply(identity, message.seq, {"ok": False, "error": str(exc)})

    def _admit(self, message: Message) -> str:
        """The message's session, after the replay check; _RefusedError if it has none or is old."""
        session = message.meta.get("session")
        if not isinstance(session, str) or not _SESSION.fullmatch(session):
            raise _RefusedError(
                f"session={quote(session)}; every message needs meta session, 32 lowercase hex "
                "digits a client draws once (RobotClient does)"
            )
        last = self._sessions.get(session)
        if last is not None and message.seq <= last:
            self.stats.replayed += 1
            raise _RefusedError(
                f"seq {message.seq} is not above {last}, this session's last: replayed"
            )
        self._sessions[session] = message.seq
        self._sessions.move_to_end(session)
        while len(self._sessions) > MAX_SESSIONS:
            oldest = next(iter(self._sessions))
            if oldest == self._owner:
                self._sessions.move_to_end(oldest)
                continue
            del self._sessions[oldest]
        if session == self._owner:
            self._owner_heard_s = time.monotonic()
        return session

    def _control(self, session: str, what: str) -> None:
        """Pass if ``session`` owns control, taking it when nobody does; else _RefusedError."""
        now = time.monotonic()
        if self._owner is not None and self._owner != session:
            silent_s = now - self._owner_heard_s
            if silent_s <= self.owner_timeout_s:
                self.stats.refused_not_owner += 1
                raise _RefusedError(
                    f"another client holds control (heard {silent_s:.1f} s ago); this one may "
                    f"watch, ping, ask status and send stop, not {what}"
                )
            log.warning("robot server: the owner was silent for %.1f s; control passes on",
                        silent_s)  # fmt: skip
        if self._owner != session:
            log.info("robot server: session %s... takes control", session[:6])
        self._owner, self._owner_heard_s = session, now

    def _target(self, message: Message) -> None:
        meta, arrays = message.meta, message.arrays
        try:
            pos = np.array(arrays["pos_m"], dtype=float)  # a copy: the frame is read-only
            quat = np.array(arrays["quat_xyzw"], dtype=float)
            twist = np.array(arrays["twist"], dtype=float) if "twist" in arrays else None
            stiffness = (
                np.array(arrays["stiffness"], dtype=float) if "stiffness" in arrays else None
            )
            gripper = meta.get("gripper")
            if gripper not in ("open", "close", None):
                raise InvalidTargetError(f"gripper {quote(gripper)}; allowed open, close or none")
            self.backend.set_target(CartesianTarget(pos, quat, twist, stiffness), gripper)
            self.stats.targets += 1
        except (KeyError, TypeError, ValueError) as exc:  # InvalidTargetError is a ValueError
            self.stats.rejected_messages += 1
            log.warning("robot server: rejected target: %s", quote(exc, 300))

    def _request(self, session: str, op: Any, meta: dict[str, Any]) -> dict[str, Any]:
        deadline = meta.get("deadline")
        if (
            isinstance(deadline, bool)
            or not isinstance(deadline, int | float)
            or not math.isfinite(deadline)
        ):
            raise _RefusedError(f"request deadline={quote(deadline)}; expected wall-clock seconds")
        if time.time() > deadline:
            raise _RefusedError(f"request {quote(op)} arrived after its deadline")
        if op in OWNER_OPS:
            self._control(session, str(op))
        if op == "ping":
            return {"ok": True}
        if op == "status":
            owner = "none" if self._owner is None else "you" if self._owner == session else "other"
            return {"ok": True, **self.backend.status(), "ticks": self.stats.ticks,
                    "owner": owner}  # fmt: skip
        if op == "acquire":
            return {"ok": True}
        if op == "release":
            self._owner = None
            return {"ok": True}
        if op == "reset":
            options = meta.get("options")
            if options is None:
                options = {}
            if not isinstance(options, dict):
                raise _RefusedError(
                    f"reset options={quote(options)}; expected a map like {{'seed': 3}}"
                )
            try:
                return {"ok": True, **self.backend.reset(dict(options))}
            except (ValueError, RuntimeError) as exc:
                raise _RefusedError(str(exc)[:300]) from None
        if op == "joint_mode":  # joint impedance toward q_rad; the next pose target switches back
            q_rad = meta.get("q_rad")
            if not (
                isinstance(q_rad, list)
                and len(q_rad) == 7
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in q_rad)
            ):
                raise _RefusedError(f"joint_mode q_rad={quote(q_rad)}; expected 7 numbers (rad)")
            try:
                self.backend.set_joint_target(np.array(q_rad, dtype=float))
            except ValueError as exc:
                raise _RefusedError(str(exc)[:300]) from None
            return {"ok": True}
        if op in ("stop", "clear_stop"):  # software stop: damp and refuse targets until cleared
            self.backend.software_stop(op == "stop")
            return {"ok": True}
        if op == "recover":  # a real arm's fault (reflex, lost link) clears only on this request
            recover = getattr(self.backend, "recover", None)
            if recover is None:
                raise _RefusedError("this backend has no faults to recover from")
            try:
                return {"ok": True, **recover()}
            except RuntimeError as exc:
                raise _RefusedError(str(exc)[:300]) from None
        raise _RefusedError(f"unknown op {quote(op)}; known: {', '.join(KNOWN_OPS)}")

    def _reply(self, identity: bytes, seq: int, reply: dict[str, Any]) -> None:
        reply["state_seq"] = self._state_seq  # states after this one reflect the request
        try:
            frames = encode("reply", seq, reply)
        except CodecError as exc:  # e.g. a backend status value that is not plain
            frames = encode("reply", seq, {"ok": False, "error": f"reply not encodable: {exc}"})
        try:
            self._router.send_multipart([identity, *frames], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.info("robot server: reply not sent: %s", exc)

    # -- output ----------------------------------------------------------------------------------
    def _publish_state(self) -> None:
        try:
            s = self.backend.state()
            arrays = {"q": s.q_rad, "dq": s.dq_rad_s, "tau": s.tau_measured_nm,
                      "ee_pos": s.ee_pos_m, "ee_quat": s.ee_quat_xyzw,
                      "ee_twist": s.ee_twist}  # fmt: skip
            features = getattr(self.backend, "features", None)
            if features is not None:
                arrays["features"] = features()
            bodies = getattr(self.backend, "body_poses", None)
            if bodies is not None:
                arrays["bodies"] = bodies()
            status = self.backend.status()
            loop_hz = self._loop_rate.update(int(status.pop("loop_ticks", self.stats.ticks)))
            meta = {
                "gripper_width_m": float(s.gripper_width_m),
                "command_age_s": float(s.command_age_s),
                "stamp_s": float(s.stamp_s),
                "published_wall_s": time.time(),  # host clock as the state is sent (mirrors)
                "loop_hz_target": 1.0 / self.backend.period_s,
                **status,
                "tick_failures": self.stats.tick_failures,
                "refused_not_owner": self.stats.refused_not_owner,
                "warnings": self.warnings.lines(),
                "warnings_total": self.warnings.total,
            }
            if loop_hz is not None:
                meta["loop_hz"] = loop_hz
            frames = encode("robot_state", self._state_seq + 1, meta, arrays)
        except Exception as exc:  # a state that cannot be read or encoded: skip it, count it
            self.stats.publish_errors += 1
            if self.stats.publish_errors == 1 or self.stats.publish_errors % 1000 == 0:
                log.error("robot server: state not published (%d so far): %s",
                          self.stats.publish_errors, quote(exc, 200))  # fmt: skip
            return
        self._state_seq += 1
        with contextlib.suppress(zmq.Again):
            self._pub.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
            self.stats.states_published += 1


@dataclass(frozen=True)
class RemoteState:
    """The newest state from the server, with what the sim adds and when it arrived."""

    state: RobotState
    meta: dict[str, Any]
    features: np.ndarray | None
    received_s: float  # time.monotonic() on arrival
    seq: int
    bodies: np.ndarray | None = None  # (N, 7) poses of a twin's other bodies (mirrors)


class RobotClient:
    """Talks to a ``RobotServer``: newest state, non-blocking targets, requests with deadlines.

    Each client is one session (``session``, random) with its own growing seq; sends are
    serialized by a lock, so threads may share a client (the env sends targets while the console
    sends stop). The first target, heartbeat or owner-only request takes control if nobody holds
    it (see the server's module docstring); ``acquire`` asks for it explicitly.
    """

    def __init__(
        self,
        endpoints: RobotEndpoints,
        security: SecurityConfig,
        context: zmq.Context | None = None,
    ) -> None:
        self._ctx = context or zmq.Context.instance()
        self._dealer = self._ctx.socket(zmq.DEALER)
        self._dealer.linger = 0
        secure_client(self._dealer, endpoints.commands, security)
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.linger = 0
        self._sub.rcvhwm = 4
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        secure_client(self._sub, endpoints.state, security)
        self.session = secrets.token_hex(16)
        self._seq = 0
        self._socket_lock = threading.Lock()  # seq order == send order; one user of the socket
        self._request_lock = threading.Lock()  # one request waits for its reply at a time
        self._latest: RemoteState | None = None
        self.states_received = 0
        self.states_skipped = 0  # states a backlog replaced before they were decoded
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="robot-client", daemon=True)
        self._thread.start()

    def _send(
        self,
        msg_type: str,
        meta: dict[str, Any],
        arrays: dict[str, np.ndarray] | None = None,
        block: bool = False,
    ) -> int | None:
        """Send one message of this session; its seq, or None if the link was full."""
        with self._socket_lock:
            self._seq += 1
            frames = encode(msg_type, self._seq, {**meta, "session": self.session}, arrays)
            try:
                self._dealer.send_multipart(frames, flags=0 if block else zmq.NOBLOCK)
            except zmq.Again:
                return None
            return self._seq

    def send_target(self, target: CartesianTarget, gripper: GripperCommand = None) -> bool:
        """Queue a target (False if the link is full; the server's watchdog then holds)."""
        arrays = {"pos_m": np.asarray(target.pos_m, np.float64),
                  "quat_xyzw": np.asarray(target.quat_xyzw, np.float64)}  # fmt: skip
        for name in ("twist", "stiffness"):  # optional feedforward and a gain change
            value = getattr(target, name)
            if value is not None:
                arrays[name] = np.asarray(value, np.float64)
        return self._send("robot_target", {"gripper": gripper}, arrays) is not None

    def keep_alive(self) -> None:
        """Tell the server the target stream is alive without sending a new target."""
        self._send("heartbeat", {})

    def request(self, op: str, timeout_s: float = 2.0, **meta: Any) -> dict[str, Any]:
        """Call ``op`` on the server; TimeoutError if no reply within ``timeout_s``,
        RuntimeError with the server's reason if it refused."""
        with self._request_lock:
            payload = {"op": op, "deadline": time.time() + timeout_s, **meta}
            seq = self._send("request", payload, block=True)
            deadline = time.monotonic() + timeout_s
            while deadline - time.monotonic() > 0:
                with self._socket_lock:  # short polls: targets from other threads still go out
                    frames = self._dealer.recv_multipart() if self._dealer.poll(5) else None
                if frames is None:
                    continue
                try:
                    reply = decode(frames, 1 << 20, frozenset({"reply"}))
                except CodecError as exc:
                    log.warning("robot client: dropped a malformed reply: %s", exc)
                    continue
                if reply.seq != seq:  # a late reply to an earlier, timed-out request
                    continue
                if not reply.meta.get("ok"):
                    raise RuntimeError(f"robot server refused {op!r}: {reply.meta.get('error')}")
                return dict(reply.meta)
        raise TimeoutError(f"no reply to {op!r} within {timeout_s} s; is the robot server up?")

    def reset(self, seed: int, timeout_s: float = 5.0) -> dict[str, Any]:
        return self.request("reset", timeout_s, options={"seed": seed})

    def software_stop(self, stop: bool = True, timeout_s: float = 1.0) -> dict[str, Any]:
        """Latch (or clear) the server's software stop: the arm damps and refuses targets."""
        return self.request("stop" if stop else "clear_stop", timeout_s)

    def latest(self, timeout_s: float = 0.0, newer_than_seq: int = 0) -> RemoteState:
        """The newest state (waiting up to ``timeout_s`` for one newer than ``newer_than_seq``).
        TimeoutError if none arrives."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._latest is None or self._latest.seq <= newer_than_seq:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"no robot state within {timeout_s} s; is the robot server publishing?"
                    )
                self._cond.wait(left)
            return self._latest

    def _receive(self) -> None:
        """Background thread: keep only the newest state (a reader never sees a stale queue)."""
        while not self._stop.is_set():
            if not self._sub.poll(50):
                continue
            try:
                frames = self._sub.recv_multipart(flags=zmq.NOBLOCK)
                while self._sub.poll(0):  # a backlog (this process was busy): only the newest
                    frames = self._sub.recv_multipart(flags=zmq.NOBLOCK)
                    self.states_skipped += 1
            except zmq.Again:
                continue
            except zmq.ZMQError:
                return
            self.states_received += 1
            try:
                msg = decode(frames, 1 << 20, frozenset({"robot_state"}))
                a, m = msg.arrays, msg.meta
                state = RobotState(
                    q_rad=a["q"], dq_rad_s=a["dq"], tau_measured_nm=a["tau"],
                    ee_pos_m=a["ee_pos"], ee_quat_xyzw=a["ee_quat"], ee_twist=a["ee_twist"],
                    gripper_width_m=float(m["gripper_width_m"]),
                    command_age_s=float(m["command_age_s"]), stamp_s=float(m["stamp_s"]),
                )  # fmt: skip
            except (CodecError, KeyError, TypeError, ValueError) as exc:
                log.warning("robot client: dropped a malformed state: %s", exc)
                continue
            remote = RemoteState(state, dict(m), a.get("features"), time.monotonic(), msg.seq,
                                 a.get("bodies"))  # fmt: skip
            with self._cond:
                self._latest = remote
                self._cond.notify_all()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._dealer.close(linger=0)
        self._sub.close(linger=0)
