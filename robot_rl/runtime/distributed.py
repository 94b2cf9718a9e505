"""Actor and learner as separate processes over ZMQ (``robot-rl actor`` / ``robot-rl learner``).

The learner is the learner core (``runtime.learner``) on a ``LearnerLink``: it records the demos
when the run has none (the only reason it builds a twin), takes every actor's steps (stored
durably in ``<run>/episodes/``, routed into the online buffer and, when intervened, the demo
buffer), runs updates while holding the update-to-data ratio against the steps received (it never
runs ahead of the data; it cannot make a robot wait), publishes the policy weights every
``weights_period_s``, writes TensorBoard (``<run>/tb``) and checkpoints in the schema
``robot-rl train`` writes, so either resumes the other's run. The actor is the actor loop
(``runtime.actor``) on an ``ActorLink``: it acts with its newest weights, swaps new ones in between
steps, and streams every step, holding what the learner has not stored yet in its spool
(``<run>/spool/<actor id>`` by default, inside the run). Either side can restart; see the links.
SIGINT or SIGTERM finish either at a step boundary, saving what they hold.

Both read the same ``TrainConfig`` (the run's config.yaml) plus a ``DistributedConfig``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robot_rl.agents.threads import thread_budget_scope
from robot_rl.config import to_dict
from robot_rl.console.bridge import AppliedMark, episode_success, operator_setup
from robot_rl.data.batch import Transition
from robot_rl.envs.intervention import ScriptedIntervener
from robot_rl.envs.twin_env import make_env
from robot_rl.runtime.actor import ActorLoop, EpisodeStats, Policy, policy_loop, stop_on_signals
from robot_rl.runtime.episode_tally import EpisodeTally
from robot_rl.runtime.learner import LearnerCore
from robot_rl.runtime.metrics import make_sink
from robot_rl.runtime.record import record_demos
from robot_rl.runtime.session import report_status
from robot_rl.runtime.train import TrainConfig
from robot_rl.transport.actor_link import ActorLink, ActorLinkConfig
from robot_rl.transport.learner_link import LearnerLink, LinkEndpoints
from robot_rl.transport.security import SecurityConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedConfig:
    """Network settings shared by ``robot-rl learner`` and ``robot-rl actor``."""

    endpoints: LinkEndpoints = field(default_factory=LinkEndpoints)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    actor_id: str = "actor-0"
    weights_period_s: float = 2.0
    weights_half: bool = False  # fp16 weights on the wire (half the bytes)
    checkpoint_period_s: float = 300.0
    status_period_s: float = 10.0
    # The actor's link (batching, spool and resend settings); endpoints and id come from above.
    actor_link: ActorLinkConfig = field(default_factory=ActorLinkConfig)


class Learner:
    """The learner process (see module docstring). ``run(duration_s)`` serves until stopped.
    A run that already holds a checkpoint is refused without ``resume`` (it is never replaced by
    a fresh agent's)."""

    def __init__(self, train: TrainConfig, net: DistributedConfig, resume: bool = False) -> None:
        self.train, self.net = train, net
        self.dir = train.run_path
        checkpoint = self.dir / "checkpoints" / "latest.pt"
        if resume and not checkpoint.is_file():
            raise FileNotFoundError(f"nothing to resume in {self.dir}: no checkpoints/latest.pt; "
                                    "start without --resume")  # fmt: skip
        if not resume and checkpoint.is_file():
            raise FileExistsError(f"{self.dir} already holds a trained agent "
                                  "(checkpoints/latest.pt); pass --resume to continue it or "
                                  "choose another run name")  # fmt: skip
        self.core = LearnerCore(train, self.dir)
        cfg_path = self.dir / "config.yaml"
        if not cfg_path.exists():
            cfg_path.write_text(yaml.safe_dump(to_dict(train), sort_keys=False))
        demo_dir = self.dir / "demos"
        if train.demos > 0 and not any(demo_dir.glob("episode_*.npz")):
            # Scripted demos need the in-process twin (a remote env belongs to the actor).
            env = make_env(dataclasses.replace(train.env, remote=None))
            try:
                record_demos(env, train.demos, demo_dir, seed=train.seed + 10_000)
            finally:
                env.close()
        self.core.load_dir(demo_dir, demos_only=True)
        self.core.sink.steps = self.core.load_dir(self.dir / "episodes", demos_only=False)
        self._resume_pending = resume
        if self.core.agent is None:  # sized by the first step an actor sends
            self.core.sink.on_first_step = self._first_step
        elif resume:
            self._resume()
        self.link = LearnerLink(net.endpoints, net.security, self.dir / "episodes",
                                self.core.sink, train.env.task)  # fmt: skip
        self.core.link = self.link
        self.link.on_relabel = self.core.sink.relabel  # an undone mark, in replay too
        self.core.metrics = make_sink(train.logger, self.dir, train)
        self._sync_steps()
        log.info("learner: %d demo and %d online steps; listening on %s (weights %s)",
                 len(self.core.demo), len(self.core.online), self.link.transitions_endpoint,
                 self.link.weights_endpoint)  # fmt: skip

    def _first_step(self, step: Transition) -> None:
        from robot_rl.runtime.learner import spaces_of

        self.core.build_agent(*spaces_of(step))
        if self._resume_pending:
            self._resume()

    def _resume(self) -> None:
        self.core.resume()
        self._resume_pending = False
        log.info("learner: resumed at %d updates", self.core.counters.updates)

    def _sync_steps(self) -> None:
        """Online steps held: loaded from earlier runs plus received from actors."""
        self.core.counters.env_steps = self.core.sink.steps

    @property
    def updates(self) -> int:
        return self.core.counters.updates

    @property
    def steps_received(self) -> int:
        """Online steps in replay: loaded from earlier runs plus received from actors."""
        return self.core.sink.steps

    @property
    def agent(self) -> Any:
        return self.core.agent

    def publish(self) -> int:
        return self.core.publish(half=self.net.weights_half, health=self.core.health())

    def checkpoint(self) -> None:
        self.core.checkpoint()

    def run(self, duration_s: float | None = None, stop: threading.Event | None = None) -> None:
        """Serve and learn until ``duration_s`` passes, ``stop`` is set, or SIGINT / SIGTERM."""
        stop = stop or threading.Event()
        now = time.monotonic()
        end = now + duration_s if duration_s is not None else float("inf")
        next_weights, next_ckpt, next_status = now, now + self.net.checkpoint_period_s, now
        print(f"learner: serving on {self.net.endpoints.transitions} (weights on "
              f"{self.net.endpoints.weights})", flush=True)  # fmt: skip
        try:
            # This thread runs the updates: the learner's thread budget while it serves.
            with stop_on_signals(stop, "the learner"), thread_budget_scope("learner"):
                while not stop.is_set() and (now := time.monotonic()) < end:
                    self.link.poll(timeout_ms=0 if self.core.learn_once() else 5)
                    self._sync_steps()
                    if now >= next_weights:
                        self.publish()
                        next_weights = now + self.net.weights_period_s
                    if now >= next_ckpt:
                        self.checkpoint()
                        next_ckpt = now + self.net.checkpoint_period_s
                    if now >= next_status:
                        log.info("learner: %d updates, %d steps received, actors %s",
                                 self.updates, self.steps_received, self.link.status())  # fmt: skip
                        report_status(self.core.health())
                        next_status = now + self.net.status_period_s
        except KeyboardInterrupt:
            log.info("learner: interrupted; saving a checkpoint")
        finally:
            self.checkpoint()
            self.link.close()
            if self.core.metrics is not None:
                self.core.metrics.close()


class Actor:
    """The actor process: acts on the env, streams steps, swaps in the newest weights; with
    ``console.enabled`` it serves the operator console and takes the operator's controls.
    ``spool_dir``: where steps the learner has not stored are held, and the relabels of marks the
    operator withdrew until the learner has applied them (default: inside the run,
    ``<run>/spool/<actor id>``). ``episodes`` and ``successes`` follow such an undo
    (``runtime.episode_tally``)."""

    def __init__(
        self, train: TrainConfig, net: DistributedConfig, spool_dir: str | Path | None = None
    ) -> None:
        self.train, self.net = train, net
        scripted = None
        if train.interventions:
            if train.env.remote is not None:
                raise ValueError(
                    "the scripted intervener needs the in-process twin; with env.remote set "
                    "interventions: false (the operator intervenes through the console)"
                )
            scripted = ScriptedIntervener(train.intervener, train.seed)
        self.env = make_env(train.env)
        self.policy = Policy(self.env.observation_space, self.env.action_space, train.agent,
                             train.seed)  # fmt: skip
        cameras = list(train.env.cameras) if train.env.obs == "pixels" else []
        self.operator = operator_setup(self.env, train.console, train.teleop, scripted, cameras)
        self.spool_dir = Path(spool_dir) if spool_dir else train.run_path / "spool" / net.actor_id
        self.link = ActorLink(
            dataclasses.replace(net.actor_link, actor_id=net.actor_id,
                                transitions_endpoint=net.endpoints.transitions,
                                weights_endpoint=net.endpoints.weights,
                                spool_dir=str(self.spool_dir)),
            net.security,
        )  # fmt: skip
        bridge = self.operator.bridge
        if bridge is not None:  # an undo of an applied mark relabels the learner's episode
            bridge.last_seq = lambda: self.link.last_step_seq
            bridge.on_undo_mark = self._undo_mark
        self.tally = EpisodeTally(window=20)  # corrected when the operator withdraws a mark
        self._loop: ActorLoop | None = None
        self._stop = threading.Event()
        self.interventions = 0
        self._next_status = 0.0

    @property
    def episodes(self) -> int:
        return self.tally.episodes

    @property
    def successes(self) -> int:
        """Finished episodes that succeeded (after any withdrawn mark)."""
        return self.tally.successes

    def _undo_mark(self, mark: AppliedMark) -> None:
        """The operator withdrew a mark this actor applied: the learner relabels the stored
        episode (the link holds the request, in the spool, until acknowledged) and the counts
        follow (the env's verdict: a success ends the episode terminated)."""
        relabel = mark.relabel(self.net.actor_id)
        self.link.relabel(relabel)
        if self.tally.withdraw_mark(relabel.last_seq, mark.before.terminated,
                                    mark.before.reward - mark.marked.reward):  # fmt: skip
            self._report()

    def _report(self) -> None:
        """The actor's numbers for the session supervisor (a no-op outside a session)."""
        steps = self._loop.steps if self._loop is not None else 0
        report_status({"steps": steps, "episodes": self.episodes,
                       "successes": self.successes,
                       "interventions": self.interventions})  # fmt: skip

    def stop(self) -> None:
        self._stop.set()

    def run(self, steps: int, seed: int = 0) -> dict[str, float]:
        """Act for ``steps`` env steps (finishing at a step boundary; an open episode continues
        in the next call); returns episode stats."""
        if self._loop is None:
            self._loop, self.weights = policy_loop(
                self.operator.env, self.policy, self.link, seed=[seed, self.link.next_seq],
                bridge=self.operator.bridge, after_step=self._after_step,
                on_episode_end=self._end_episode,
            )  # fmt: skip
        print(f"actor: acting as {self.net.actor_id}", flush=True)
        self._report()  # also the part's ready file
        try:
            # This thread steps the env and runs the policy: the actor's thread budget.
            with stop_on_signals(self._stop, "the actor"), thread_budget_scope("actor"):
                self._loop.run(max_steps=steps, should_stop=self._stop.is_set)
        except KeyboardInterrupt:
            log.info("actor: interrupted")
        return {
            "episodes": float(self.episodes),
            "success_rate": self.successes / self.episodes if self.episodes else 0.0,
            "weights_version": float(self.link.weights_version),
            "unacknowledged_steps": float(self.link.unacknowledged_steps),
        }

    def _after_step(self, step: Transition, info: dict[str, Any]) -> None:
        self.interventions += step.intervened
        now = time.monotonic()
        if now >= self._next_status:
            self._report()
            self._next_status = now + 2.0
        hub = self.operator.hub
        if hub is not None and self._loop is not None and self._loop.steps % 10 == 1:
            # The learner's own health (with its utd_target) wins over this actor's config.
            health = {"utd_target": self.train.agent.utd_ratio, **self.link.learner_health}
            hub.update(**health, weights_version=self.link.weights_version,
                       weight_age_s=self.link.weights_age_s, steps_held=self.link.steps_held,
                       steps_stored=self.link.steps_stored,
                       learner_error=self.link.last_learner_error)  # fmt: skip

    def _end_episode(self, info: dict[str, Any], stats: EpisodeStats, finished: bool) -> None:
        if not finished:
            return
        success = episode_success(info)
        # Keyed by the seq of the episode's last step, which an undo of its mark names.
        self.tally.add(self.link.last_step_seq, success, stats.episode_return,
                       stats.intervention_rate)  # fmt: skip
        log.info("actor: episode %d %s; weights v%d (%.1f s old); %d steps held",
                 self.episodes, "success" if success else "failure", self.link.weights_version,
                 self.link.weights_age_s, self.link.unacknowledged_steps)  # fmt: skip

    def close(self, flush_timeout_s: float = 10.0) -> bool:
        """Hand over what is held (up to the timeout), then close; True if nothing is left."""
        if self._loop is not None:
            self._loop.close()  # the learner stores the open episode as unfinished
        done = self.link.flush(flush_timeout_s)
        self.link.close()
        print(self.link.stop_summary(), flush=True)
        self.operator.close()
        self.env.close()
        return done
