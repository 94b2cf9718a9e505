"""Between an actor loop and the console: the operator's controls in, what happened out.

``ConsoleBridge.before_step`` applies the controls that arrived since the last step: take over /
hand back go to the teleop intervener; pause and the software stop hold the loop (the stop also
latches the arm's damping through the env); reset, mark success and mark failure end the episode
(a success mark makes the step terminal with reward 1, a failure mark truncates it, so the episode
record says what the operator saw); record demo hands the arm to the operator for the next episode
and stores that episode as a demo. ``after_step`` publishes the step to the hub.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_rl.console.hub import ConsoleHub
from robot_rl.teleop.intervener import TeleopIntervener

log = logging.getLogger(__name__)


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

    def before_step(
        self, wait_s: float = 0.1, should_stop: Callable[[], bool] | None = None
    ) -> StepRequest:
        """Apply pending controls; blocks (responsive to new controls) while paused or stopped,
        unless ``should_stop`` says the loop is ending."""
        request = StepRequest()
        while True:
            for control in self.hub.take_controls():
                self._apply(control.name, control.page_ms, request)
            if not (self.paused or self.stopped) or request.reset or request.label:
                break
            if should_stop is not None and should_stop():
                break
            self.hub.wait(wait_s)
        return request

    def _apply(self, name: str, page_ms: float | None, request: StepRequest) -> None:
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
        elif name in ("mark_success", "mark_failure"):
            request.label = "success" if name == "mark_success" else "failure"
        elif name == "record_demo":
            self.record_next = True
        self.hub.update(paused=self.paused, stopped=self.stopped,
                        recording=self.recording or self.record_next)  # fmt: skip

    def _software_stop(self, stop: bool) -> None:
        target = getattr(self.env, "unwrapped", self.env)
        if hasattr(target, "software_stop"):
            target.software_stop(stop)

    def start_episode(self) -> None:
        """At each reset: a requested demo starts now, with the operator in control."""
        self.recording, self.record_next = self.record_next, False
        if self.recording and self.operator is not None:
            self.operator.request("take")
        self.hub.update(recording=self.recording)

    def end_episode(self, info: dict[str, Any], episode_return: float, interventions: int,
                    steps: int) -> bool:  # fmt: skip
        """At an episode's end: record it on the console, end a demo (the operator hands back);
        returns its success, the operator's mark first, else the env's."""
        success = episode_success(info)
        self.hub.end_episode(success, episode_return, interventions / max(1, steps))
        if self.recording and self.operator is not None:
            self.operator.request("release")
        self.recording = False
        return success

    def after_step(self, obs: dict[str, np.ndarray], policy_action: np.ndarray,
                   info: dict[str, Any], episode_return: float) -> None:  # fmt: skip
        frames = {k: v for k, v in obs.items() if getattr(v, "ndim", 0) == 3}
        base = getattr(self.env, "unwrapped", self.env)
        if frames:
            self.hub.publish_frames(frames, info.get("frame_stamp_s", time.time()))
        elif getattr(base, "cameras", None) is not None:  # camera streams the policy ignores
            for camera in base.cameras.cameras:
                received = base.cameras.latest(camera)
                if received is not None:
                    self.hub.publish_frames({camera: received.frame.image},
                                            received.capture_wall_s)  # fmt: skip
        fields: dict[str, Any] = {"policy_action": policy_action, "episode_return": episode_return,
                                  "in_control": "operator" if info.get("intervened") else "policy",
                                  "operator_action": info["action"] if info.get("intervened")
                                  else None}  # fmt: skip
        if hasattr(base, "robot_state"):
            state = base.robot_state()
            fields.update(tcp_pos_m=state.ee_pos_m, gripper_width_m=state.gripper_width_m)
        if "success_probability" in info:
            fields["success_probability"] = info["success_probability"]
        detector = getattr(base, "detector", None)
        if detector is not None:
            fields["threshold"] = detector.decision.config.theta_on
        self.hub.update(**fields)


@dataclass
class OperatorSetup:
    env: Any  # the env the actor steps, wrapped with its interveners
    bridge: ConsoleBridge | None
    hub: ConsoleHub | None
    server: Any | None  # ConsoleServer when the console is enabled

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        operator = self.bridge.operator if self.bridge is not None else None
        if operator is not None:
            operator.device.close()


def operator_setup(env: Any, console: Any, teleop: Any, scripted: Any | None,
                   cameras: list[str]) -> OperatorSetup:  # fmt: skip
    """Wrap ``env`` with the operator (when a console or a teleop device is configured) before an
    optional scripted intervener, and start the console server when enabled."""
    from robot_rl.console.server import ConsoleServer
    from robot_rl.envs.intervention import InterventionWrapper
    from robot_rl.teleop.intervener import CombinedIntervener, open_device

    hub = operator = server = None
    if console.enabled or teleop.device in ("spacemouse", "gamepad"):
        hub = ConsoleHub(teleop=teleop)
        operator = TeleopIntervener(open_device(teleop, hub.page), teleop)
    intervener = CombinedIntervener(operator, scripted) if operator else scripted
    wrapped = InterventionWrapper(env, intervener) if intervener else env
    bridge = ConsoleBridge(hub, wrapped, operator) if hub is not None else None
    interrupt = getattr(getattr(env, "unwrapped", env), "interrupt_step", None)
    if hub is not None and interrupt is not None:
        hub.add_input_listener(interrupt)  # a paced env answers the operator at once
    if hub is not None and console.enabled:
        server = ConsoleServer(hub, console, cameras)
        print(f"operator console: {server.start()}", flush=True)
    return OperatorSetup(wrapped, bridge, hub, server)
