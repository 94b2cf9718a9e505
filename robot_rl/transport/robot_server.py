"""The robot server: the 1 kHz controller loop served over ZMQ, and the client that talks to it.

Server (one thread owns the robot; nothing else touches it):
- ticks the control loop at its period on wall-clock deadlines (the twin is stepped in lockstep,
  paced to real time, so its sim clock runs with the wall clock);
- between ticks, takes targets and requests from a ROUTER socket and publishes the state on a
  PUB socket at ``state_rate_hz`` (>= 100 Hz);
- targets ("robot_target": arrays pos_m (3), quat_xyzw (4), optional twist (6) feedforward and
  stiffness (6, a gain change the loop ramps smoothly); meta gripper "open" / "close" / None) are
  validated by the loop (finite, unit quaternion, inside the workspace); a bad one
  is rejected, logged and counted in the state (``rejected_targets``), never sent to the arm;
- requests ("request": op reset / ping / status / joint_mode, with a wall-clock ``deadline``) get
  a "reply" with the same seq; a request already past its deadline is refused, not run late.
  ``joint_mode`` switches the loop to joint impedance toward ``q_rad`` (e.g. a home posture); the
  next pose target switches it back to Cartesian;
- the loop's watchdog holds the arm 100 ms after the last target and damps it at 500 ms, so a
  client that stops sending (crash, network) leaves the arm safe; a "heartbeat" between targets
  keeps a tracking arm tracking (it never wakes a holding one).

State message ("robot_state") arrays: q, dq, tau (7), ee_pos (3), ee_quat (4, xyzw), ee_twist
(6), and on a sim backend ``features`` (the task's); meta: gripper_width_m, command_age_s,
stamp_s, mode (``robot_rl.controllers.watchdog.ControlMode``), target_age_s (the watchdog's clock),
rejected_targets, faults, and ``success`` on a sim backend.

``RobotClient`` keeps the newest state (``latest``), sends targets without blocking and makes
requests with deadlines.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import zmq

from robot_rl.controllers.targets import CartesianTarget, InvalidTargetError, JointTarget
from robot_rl.interfaces import RobotState
from robot_rl.transport.codec import CodecError, decode, encode
from robot_rl.transport.security import SecurityConfig, secure_client, secure_server

log = logging.getLogger(__name__)

GripperCommand = Literal["open", "close"] | None


class RobotBackend(Protocol):
    """What the server drives: a control loop over a robot (the twin scene, or a real arm)."""

    period_s: float

    def tick(self) -> Any: ...

    def set_target(self, target: CartesianTarget, gripper: GripperCommand) -> None: ...

    def keep_alive(self) -> None: ...

    def state(self) -> RobotState: ...

    def status(self) -> dict[str, Any]: ...

    def reset(self, options: dict[str, Any]) -> dict[str, Any]: ...

    def set_joint_target(self, q_rad: np.ndarray) -> None: ...

    def software_stop(self, stop: bool) -> None: ...


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
        self.scene._command_gripper(gripper)

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
        seed = options.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"reset seed={seed!r}; expected an int")
        self.scene.reset(seed)
        return {"seed": seed}


@dataclass(frozen=True)
class RobotEndpoints:
    commands: str = "tcp://127.0.0.1:5560"  # ROUTER: targets and requests
    state: str = "tcp://127.0.0.1:5561"  # PUB: the state stream


@dataclass
class ServerStats:
    ticks: int = 0
    states_published: int = 0
    targets: int = 0
    rejected_messages: int = 0
    late_ticks: int = 0
    requests: dict[str, int] = field(default_factory=dict)


class RobotServer:
    """Serves ``backend`` (see module docstring). ``start()`` runs it on its own thread."""

    def __init__(
        self,
        backend: RobotBackend,
        endpoints: RobotEndpoints,
        security: SecurityConfig,
        state_rate_hz: float = 200.0,
        context: zmq.Context | None = None,
    ) -> None:
        if state_rate_hz < 100:
            raise ValueError(f"state_rate_hz={state_rate_hz}; publish at >= 100 Hz")
        self.backend = backend
        self.state_period_s = 1.0 / state_rate_hz
        self.stats = ServerStats()
        self._ctx = context or zmq.Context.instance()
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.linger = 0
        self._router.maxmsgsize = 1 << 20
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
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="robot-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._router.close(linger=0)
        self._pub.close(linger=0)
        if self.error is not None:
            raise RuntimeError("robot server stopped on an error") from self.error

    def _run(self) -> None:
        period = self.backend.period_s
        next_tick = time.monotonic()
        next_state = next_tick
        try:
            while not self._stop.is_set():
                self._drain(max_messages=8)
                self.backend.tick()
                self.stats.ticks += 1
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
                elif delay < -20 * period:  # far behind (a slow host): re-anchor, do not burst
                    self.stats.late_ticks += 1
                    next_tick = time.monotonic()
        except BaseException as exc:  # surfaced by stop(); the watchdog-free arm is the twin here
            self.error = exc
            log.exception("robot server failed")

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
            if message.type == "robot_target":
                self._target(message)
            elif message.type == "heartbeat":
                self.backend.keep_alive()
            else:
                self._request(identity, message)

    def _target(self, message: Any) -> None:
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
                raise InvalidTargetError(f"gripper {gripper!r}; allowed open, close or none")
            self.backend.set_target(CartesianTarget(pos, quat, twist, stiffness), gripper)
            self.stats.targets += 1
        except (KeyError, TypeError, ValueError, InvalidTargetError) as exc:
            self.stats.rejected_messages += 1
            log.warning("robot server: rejected target: %s", exc)

    def _request(self, identity: bytes, message: Any) -> None:
        meta = message.meta
        op = meta.get("op")
        self.stats.requests[str(op)] = self.stats.requests.get(str(op), 0) + 1
        deadline = meta.get("deadline")
        reply: dict[str, Any]
        if not isinstance(deadline, int | float) or time.time() > deadline:
            reply = {"ok": False, "error": f"request {op!r} arrived after its deadline"}
        elif op == "ping":
            reply = {"ok": True}
        elif op == "status":
            reply = {"ok": True, **self.backend.status(), "ticks": self.stats.ticks}
        elif op == "reset":
            try:
                reply = {"ok": True, **self.backend.reset(dict(meta.get("options") or {}))}
            except (ValueError, RuntimeError) as exc:
                reply = {"ok": False, "error": str(exc)}
        elif op == "joint_mode":  # joint impedance toward q_rad; the next pose target switches back
            try:
                self.backend.set_joint_target(np.array(meta.get("q_rad"), dtype=float))
                reply = {"ok": True}
            except (ValueError, TypeError, InvalidTargetError) as exc:
                reply = {"ok": False, "error": str(exc)}
        elif op in ("stop", "clear_stop"):  # software stop: damp and refuse targets until cleared
            self.backend.software_stop(op == "stop")
            reply = {"ok": True}
        else:
            reply = {
                "ok": False,
                "error": f"unknown op {op!r}; known: ping, status, reset, joint_mode, stop, "
                "clear_stop",
            }
        reply["state_seq"] = self._state_seq  # states after this one reflect the request
        try:
            self._router.send_multipart([identity, *encode("reply", message.seq, reply)],
                                        flags=zmq.NOBLOCK)  # fmt: skip
        except zmq.ZMQError as exc:
            log.info("robot server: reply not sent: %s", exc)

    # -- output ----------------------------------------------------------------------------------
    def _publish_state(self) -> None:
        s = self.backend.state()
        arrays = {"q": s.q_rad, "dq": s.dq_rad_s, "tau": s.tau_measured_nm, "ee_pos": s.ee_pos_m,
                  "ee_quat": s.ee_quat_xyzw, "ee_twist": s.ee_twist}  # fmt: skip
        features = getattr(self.backend, "features", None)
        if features is not None:
            arrays["features"] = features()
        bodies = getattr(self.backend, "body_poses", None)
        if bodies is not None:
            arrays["bodies"] = bodies()
        meta = {
            "gripper_width_m": float(s.gripper_width_m),
            "command_age_s": float(s.command_age_s),
            "stamp_s": float(s.stamp_s),
            **self.backend.status(),
        }
        self._state_seq += 1
        try:
            self._pub.send_multipart(encode("robot_state", self._state_seq, meta, arrays),
                                     copy=False, flags=zmq.NOBLOCK)  # fmt: skip
            self.stats.states_published += 1
        except zmq.Again:
            pass


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
    """Talks to a ``RobotServer``: newest state, non-blocking targets, requests with deadlines."""

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
        self._seq = 0
        self._latest: RemoteState | None = None
        self.states_received = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="robot-client", daemon=True)
        self._thread.start()

    def send_target(self, target: CartesianTarget, gripper: GripperCommand = None) -> bool:
        """Queue a target (False if the link is full; the server's watchdog then holds)."""
        arrays = {"pos_m": np.asarray(target.pos_m, np.float64),
                  "quat_xyzw": np.asarray(target.quat_xyzw, np.float64)}  # fmt: skip
        for name in ("twist", "stiffness"):  # optional feedforward and a gain change
            value = getattr(target, name)
            if value is not None:
                arrays[name] = np.asarray(value, np.float64)
        self._seq += 1
        frames = encode("robot_target", self._seq, {"gripper": gripper}, arrays)
        try:
            self._dealer.send_multipart(frames, flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def keep_alive(self) -> None:
        """Tell the server the target stream is alive without sending a new target."""
        self._seq += 1
        with contextlib.suppress(zmq.Again):
            self._dealer.send_multipart(encode("heartbeat", self._seq), flags=zmq.NOBLOCK)

    def request(self, op: str, timeout_s: float = 2.0, **meta: Any) -> dict[str, Any]:
        """Call ``op`` on the server; TimeoutError if no reply within ``timeout_s``,
        RuntimeError with the server's reason if it refused."""
        self._seq += 1
        seq = self._seq
        payload = {"op": op, "deadline": time.time() + timeout_s, **meta}
        self._dealer.send_multipart(encode("request", seq, payload))
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not self._dealer.poll(int(left * 1000) + 1):
                break
            try:
                reply = decode(self._dealer.recv_multipart(), 1 << 20, frozenset({"reply"}))
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
