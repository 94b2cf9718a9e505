"""Between an actor loop and the console: the operator's controls in, what happened out.

``ConsoleBridge.before_step`` applies the controls that arrived since the last step: take over /
hand back go to the teleop intervener; pause and the software stop hold the loop (the stop also
latches the arm's damping through the env); reset, mark success and mark failure end the episode
(a success mark makes the step terminal with reward 1, a failure mark truncates it, so the episode
record says what the operator saw); record demo hands the arm to the operator for the next episode
and stores that episode as a demo. ``after_step`` publishes the step to the hub: robot state and
mode, actions (normalised, in the env's action frame), who is in control, the detector, and one
point of the episode timeline.
``undo_mark`` withdraws a mark: one the actor has not applied never happens; one already applied is
handed to ``on_undo_mark(AppliedMark)``, whose ``relabel(actor_id)`` the runtime sends to the
learner, which rewrites the stored episode and its replay copy (``data.episode_labels``).

``operator_setup`` also starts a ``CameraForwarder`` when the env reads camera streams, so the page
sees the cameras while the policy loop is paused, stopped or resetting, and, for an arm env, a
``RobotStatusForwarder`` that sends the robot's mode, loop rate and warnings (``robot_fields``) at
10 Hz from the in-process twin and a robot server alike, whatever the loop is doing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_rl.console.hub import ConsoleHub
from robot_rl.console.robot_status import robot_fields
from robot_rl.data.batch import STATE_KEY
from robot_rl.data.episode_labels import StepFlags, StepRelabel
from robot_rl.envs.arm_env import arm_env
from robot_rl.teleop.intervener import TeleopIntervener

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppliedMark:
    """A mark the actor applied: the episode (the hub's count) it ended, the label, the marked
    step as stored (its executed action (A,), final state (D,), seq from ``last_seq``) and its
    flags with the mark and before it."""

    episode: int
    label: str
    action: np.ndarray
    next_state: np.ndarray
    marked: StepFlags
    before: StepFlags
    seq: int | None

    def relabel(self, actor_id: str) -> StepRelabel:
        """What withdrawing it does to the stored step: the env's reward and terminated flag
        back; the episode stays ended (truncated unless the env ended it)."""
        if self.seq is None:
            raise ValueError("the marked step's seq is unknown: set ConsoleBridge.last_seq")
        restored = StepFlags(self.before.reward, self.before.terminated,
                             not self.before.terminated)  # fmt: skip
        return StepRelabel(actor_id, self.seq, self.label, self.marked, restored, self.action,
                           self.next_state)  # fmt: skip


@dataclass
class StepRequest:
    label: str | None = None  # "success" or "failure": end this episode with the operator's label
    reset: bool = False  # end the episode now (unlabelled) and start a new one


def episode_success(info: dict[str, Any]) -> bool:
    """An ended episode's success: the operator's mark if there is one, else the env's."""
    label = info.get("operator_label")
    return label == "success" if label is not None else bool(info.get("success", False))


class ConsoleBridge:
    def __init__(self, hub: ConsoleHub, env: Any, operator: TeleopIntervener | None = None) -> None:
        self.hub, self.env, self.operator = hub, env, operator
        self.paused = False
        self.stopped = False
        self.recording = False  # this episode is an operator demo
        self.record_next = False
        self.takeover_page_ms: float | None = None  # the newest take-over's page clock
        self.steps = 0  # steps of the current episode
        self.holds = 0  # wait cycles spent holding (paused or stopped): a counter for tests
        self.undone: list[tuple[int, str]] = []  # applied marks withdrawn: (episode, label)
        # Called with an applied mark that was withdrawn (the runtime relabels the stored step);
        # ``last_seq()``: the link's seq of the newest step (set by the runtime).
        self.on_undo_mark: Callable[[AppliedMark], None] | None = None
        self.last_seq: Callable[[], int] | None = None
        self._labels: dict[int, str] = {}  # applied marks of recent episodes, by episode
        self._applied: dict[int, AppliedMark] = {}  # the marked steps of recent episodes
        self.streams_forwarded = False  # a CameraForwarder feeds the env's camera streams
        self._last_refresh_s = 0.0
        self.arm = arm_env(env)  # None for a plain gymnasium env (env.id)
        self.max_steps = self.arm.max_episode_steps if self.arm else None
        self.period_s = self.arm.config.policy_period_s if self.arm else None
        hub.update(step_limit=self.max_steps, policy_period_s=self.period_s,
                   action_frame=self.arm.action_frame if self.arm else "reset frame",
                   detector=self.arm is not None and self.arm.detector is not None)  # fmt: skip

    def before_step(
        self, wait_s: float = 0.1, should_stop: Callable[[], bool] | None = None
    ) -> StepRequest:
        """Apply pending controls; blocks (responsive to new controls) while paused or stopped,
        unless ``should_stop`` says the loop is ending."""
        request = StepRequest()
        while True:
            for control in self.hub.take_controls():
                self._apply(control.name, control.page_ms, request, control.episode)
            if not (self.paused or self.stopped) or request.reset or request.label:
                break
            if should_stop is not None and should_stop():
                break
            self.holds += 1
            self._refresh_frames()
            self.hub.wait(wait_s)
        return request

    def _apply(self, name: str, page_ms: float | None, request: StepRequest,
               episode: int | None = None) -> None:  # fmt: skip
        log.info("console: %s", name)
        if name == "take_over" and self.operator is not None:
            self.operator.request("take")
            self.takeover_page_ms = page_ms
        elif name == "hand_back" and self.operator is not None:
            self.operator.request("release")
        elif name == "pause":
            self.paused = True
        elif name == "resume":
            self.paused = False
        elif name == "stop":
            self.stopped = True
            self._software_stop(True)
        elif name == "clear_stop":
            self.stopped = False
            self._software_stop(False)
        elif name == "reset":
            request.reset = True
        elif name in ("mark_success", "mark_failure") and episode not in (None, self.hub.episode):
            log.warning("console: %s dropped: it was meant for episode %s, which has ended",
                        name, episode)  # fmt: skip
        elif name in ("mark_success", "mark_failure") and request.label is None:
            request.label = "success" if name == "mark_success" else "failure"
            if episode is not None:
                self._labels[episode] = request.label
        elif name == "undo_mark" and episode is not None:
            self._undo(episode)
        elif name == "record_demo":
            self.record_next = True
        self.hub.update(paused=self.paused, stopped=self.stopped,
                        recording=self.recording or self.record_next)  # fmt: skip

    def _refresh_frames(self, period_s: float = 0.1) -> None:
        """While holding, render an in-process sim's cameras so the page's view stays current
        (a lockstep sim does not move while the loop holds, so this is the arm as it is)."""
        now = time.monotonic()
        if self.arm is None or self.streams_forwarded or now - self._last_refresh_s < period_s:
            return
        self._last_refresh_s = now
        try:
            frames = self.arm.still_frames()
        except Exception as exc:  # a failed render must not stop the hold loop
            log.warning("console: camera refresh while holding failed: %s", exc)
            return
        self.hub.publish_frames(frames)

    def _undo(self, episode: int) -> None:
        label = self._labels.pop(episode, None)
        applied = self._applied.pop(episode, None)
        if label is None:
            log.warning("console: undo of a mark on episode %d, which has no applied mark", episode)
            return
        self.undone.append((episode, label))
        del self.undone[:-100]
        log.info("console: the %s mark of episode %d is withdrawn", label, episode)
        if applied is None:  # applied without a step record (a recorder ending the episode)
            log.warning("console: the %s mark of episode %d has no stored step to relabel",
                        label, episode)  # fmt: skip
        else:  # the charts follow: the env's own verdict (a success ends it terminated)
            self.hub.relabel_episode(episode, applied.before.terminated,
                                     applied.before.reward - applied.marked.reward)  # fmt: skip
            if self.on_undo_mark is not None:
                try:
                    self.on_undo_mark(applied)
                except Exception:  # the relabel failing must not stop the actor loop
                    log.exception("console: relabelling episode %d after an undo failed",
                                  episode)  # fmt: skip

    def _software_stop(self, stop: bool) -> None:
        if self.arm is not None:
            self.arm.software_stop(stop)

    def start_episode(self) -> None:
        """At each reset: a requested demo starts now, with the operator in control."""
        self.recording, self.record_next = self.record_next, False
        self.steps = 0
        if self.recording and self.operator is not None:
            self.operator.request("take")
        self.hub.update(recording=self.recording)

    def end_episode(self, info: dict[str, Any], episode_return: float, interventions: int,
                    steps: int) -> bool:  # fmt: skip
        """At an episode's end: record it on the console, end a demo (the operator hands back);
        returns its success, the operator's mark first, else the env's."""
        success = episode_success(info)
        self.hub.end_episode(success, episode_return, interventions / max(1, steps))
        while len(self._labels) > 10:  # applied marks kept for an undo: the newest few
            del self._labels[min(self._labels)]
        while len(self._applied) > 10:
            del self._applied[min(self._applied)]
        if self.recording and self.operator is not None:
            self.operator.request("release")
        self.recording = False
        return success

    def after_step(self, obs: dict[str, np.ndarray], policy_action: np.ndarray,
                   info: dict[str, Any], episode_return: float) -> None:  # fmt: skip
        frames = {k: v for k, v in obs.items() if getattr(v, "ndim", 0) == 3}
        base = self.arm
        if frames:
            self.hub.publish_frames(frames, info.get("frame_stamp_s", time.time()))
        elif not self.streams_forwarded and base is not None and base.cameras is not None:
            for camera in base.cameras.cameras:
                received = base.cameras.latest(camera)
                if received is not None:
                    self.hub.publish_frames({camera: received.frame.image},
                                            received.capture_wall_s)  # fmt: skip
        self.steps += 1
        before, marked = info.get("label_before"), info.get("label_after")
        if isinstance(before, StepFlags) and isinstance(marked, StepFlags) and STATE_KEY in obs:
            action = np.asarray(info.get("action", policy_action), np.float32).copy()
            self._applied[self.hub.episode] = AppliedMark(
                self.hub.episode, str(info.get("operator_label")), action,
                np.asarray(obs[STATE_KEY], np.float32).copy(), marked, before,
                self.last_seq() if self.last_seq is not None else None,
            )  # fmt: skip
        operator = bool(info.get("intervened"))
        fields: dict[str, Any] = {"policy_action": policy_action, "episode_return": episode_return,
                                  "in_control": "operator" if operator else "policy",
                                  "operator_action": info.get("action") if operator
                                  else None}  # fmt: skip
        if base is not None:
            state = base.robot_state()
            fields.update(robot_fields(base.robot_status()))
            fields.update(tcp_pos_m=state.ee_pos_m, gripper_width_m=state.gripper_width_m)
        score = info.get("success_probability")
        if score is not None:
            fields["success_probability"] = score
        detector = base.detector if base is not None else None
        threshold = None
        if detector is not None:
            threshold = fields["threshold"] = detector.decision.config.theta_on
        fired = bool(info.get("detector_fired", score is not None and threshold is not None
                                               and score >= threshold))  # fmt: skip
        if fired:
            fields["detector_fired"] = True
        self.hub.update(**fields)
        self.hub.record_step(self.steps, operator, score, fired)


@dataclass
class OperatorSetup:
    env: Any  # the env the actor steps, wrapped with its interveners
    bridge: ConsoleBridge | None
    hub: ConsoleHub | None
    server: Any | None  # ConsoleServer when the console is enabled
    forwarder: Any | None = None  # CameraForwarder when the env reads camera streams
    robot_status: Any | None = None  # RobotStatusForwarder when the env is an arm env

    def close(self) -> None:
        if self.forwarder is not None:
            self.forwarder.stop()
        if self.robot_status is not None:
            self.robot_status.stop()
        if self.server is not None:
            self.server.stop()
        operator = self.bridge.operator if self.bridge is not None else None
        if operator is not None:
            operator.device.close()


def operator_setup(env: Any, console: Any, teleop: Any, scripted: Any | None,
                   cameras: list[str]) -> OperatorSetup:  # fmt: skip
    """Wrap ``env`` with the operator (when a console or a teleop device is configured) before an
    optional scripted intervener, and start the console server when enabled."""
    from robot_rl.console.forwarder import CameraForwarder, RobotStatusForwarder
    from robot_rl.console.server import ConsoleServer
    from robot_rl.envs.intervention import InterventionWrapper
    from robot_rl.teleop.intervener import CombinedIntervener, open_device

    hub = operator = server = None
    if console.enabled or teleop.device in ("spacemouse", "gamepad"):
        hub = ConsoleHub(console.hub, teleop=teleop)
        operator = TeleopIntervener(open_device(teleop, hub.page), teleop)
    intervener = CombinedIntervener(operator, scripted) if operator else scripted
    wrapped = InterventionWrapper(env, intervener) if intervener else env
    bridge = ConsoleBridge(hub, wrapped, operator) if hub is not None else None
    arm = arm_env(env)
    if hub is not None and arm is not None:
        hub.add_input_listener(arm.interrupt_step)  # a paced env answers the operator at once
    forwarder = status = None
    if hub is not None and arm is not None:  # mode, loop rate, warnings while the loop holds too
        status = RobotStatusForwarder(arm.robot_status, hub).start()
    if hub is not None and console.enabled:
        server = ConsoleServer(hub, console, cameras)
        if arm is not None and arm.cameras is not None:
            forwarder = CameraForwarder(arm.cameras, hub).start()  # frames while the loop holds
            if bridge is not None:
                bridge.streams_forwarded = True
        print(f"operator console: {server.start()}", flush=True)
    return OperatorSetup(wrapped, bridge, hub, server, forwarder, status)
