"""The pieces every training setup shares, whatever carries the data between actor and learner:
one actor step into a link, swapping in published weights, and the learner's sink from a link
into the replay buffers. ``robot-rl train`` (in-process link) and ``robot-rl actor`` /
``robot-rl learner`` (ZMQ links) are built from these.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

import numpy as np

from robot_rl.agents.sac import SACAgent
from robot_rl.data.batch import Batch, Transition
from robot_rl.data.mixing import route, sample_mixed
from robot_rl.data.replay import ReplayBuffer


class ActorEnd(Protocol):
    """What an actor needs of its link (``ActorLink`` or ``InProcessActorLink``)."""

    def add(self, step: Transition) -> None: ...

    def latest_weights(self) -> tuple[int, dict[str, Any]] | None: ...


def act_once(
    env: Any,
    policy: SACAgent,
    obs: dict[str, np.ndarray],
    link: ActorEnd,
    label: str | None = None,
) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any], Transition]:
    """One exploration step: act, step the env (its intervener may take over), hand the step,
    with the action actually executed, to the link. Returns the env's results and the step.

    ``label`` is the operator's verdict on this step (console marks): "success" makes it terminal
    with reward 1, "failure" ends the episode, truncated, with reward 0."""
    action = policy.act(obs, deterministic=False)
    next_obs, reward, terminated, truncated, info = env.step(action)
    info.setdefault("policy_action", action)
    reward, terminated, truncated = apply_label(label, reward, terminated, truncated, info)
    executed = np.asarray(info.get("action", action), dtype=np.float32)
    step = Transition(
        obs, executed, float(reward), next_obs, bool(terminated), bool(truncated),
        bool(info.get("intervened", False)), float(info.get("gripper_penalty", 0.0)),
    )  # fmt: skip
    link.add(step)
    return next_obs, float(reward), bool(terminated), bool(truncated), info, step


def apply_label(
    label: str | None, reward: float, terminated: bool, truncated: bool, info: dict[str, Any]
) -> tuple[float, bool, bool]:
    """An operator's mark on a step: "success" makes it terminal with reward 1; "failure" ends
    the episode, truncated, with reward 0 (the operator's word wins over a detector's false
    positive too). Records the mark as ``info["operator_label"]``."""
    if label is None:
        return reward, terminated, truncated
    info["operator_label"] = label
    if label == "success":
        return 1.0, True, False
    return 0.0, False, True


def swap_weights(link: ActorEnd, policy: SACAgent) -> int | None:
    """Load the newest published weights into ``policy`` (between steps); their version, if new."""
    weights = link.latest_weights()
    if weights is None:
        return None
    policy.load_policy_state_dict(weights[1])
    return weights[0]


class ReplaySink:
    """A learner link's sink: every step into the online buffer, interventions into the demo
    buffer too. Steps of different actors, or after a break in one actor's stream, never join
    one replay episode."""

    def __init__(self, demo: ReplayBuffer, online: ReplayBuffer, lock: threading.Lock) -> None:
        self.demo, self.online, self.lock = demo, online, lock
        self.steps = 0
        self._last_actor: str | None = None

    def __call__(self, actor_id: str, steps: list[Transition], discontinuity: bool) -> None:
        with self.lock:
            if discontinuity or actor_id != self._last_actor:
                self.online.close_episode()
                self.demo.close_episode()
            self._last_actor = actor_id
            for step in steps:
                route(step, self.demo, self.online)
            self.steps += len(steps)


def due_batch(
    sink: ReplaySink, steps: int, updates: int, learning_starts: int, batch_size: int,
    utd_ratio: int, device: Any,
) -> Batch | None:  # fmt: skip
    """The next learner step's batch (``utd_ratio`` minibatches, each mixed 50/50), or None while
    the learner would run ahead of the data: at most one learner step per env step past
    ``learning_starts``."""
    with sink.lock:
        if steps - learning_starts <= updates or len(sink.demo) + len(sink.online) == 0:
            return None
        return sample_mixed(sink.demo, sink.online, batch_size * utd_ratio, device,
                            minibatches=utd_ratio)  # fmt: skip
