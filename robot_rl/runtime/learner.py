"""The one learner core, for the in-process session (``runtime.train``) and the learner process
(``runtime.distributed``) alike.

It holds the replay buffers (demos, online), loads the run's demos and stored episodes into them,
schedules updates (none before ``learning_starts`` online steps, then at most one learner step of
``utd_ratio`` critic updates per online step: it never runs ahead of the data), writes the update
metrics to one metrics sink (TensorBoard by default), publishes the policy weights and writes one
checkpoint schema, which either launcher resumes:

``checkpoints/latest.pt``: the agent's full state, and ``extra`` = {``schema``: 2, ``counters``:
{env_steps, updates, episodes, interventions}, ``evaluations``: [...], ``config``: the train
config}. ``env_steps`` counts the online steps the learner holds (received, for the learner
process). A checkpoint is never replaced by a less-trained one silently: the older, better one is
kept as ``latest.prev.pt`` and the replacement is logged.

The agent is built from the spaces of the first step the learner holds (a demo, a stored episode,
or the first step an actor sends), never by building an env.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from robot_rl.agents.checkpoint import (
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from robot_rl.agents.frozen_features import attach_configured_feature_caches
from robot_rl.agents.sac import SACAgent
from robot_rl.config import to_dict
from robot_rl.data.batch import Batch, Transition
from robot_rl.data.episode_labels import StepRelabel
from robot_rl.data.episodes import load_episodes
from robot_rl.data.mixing import route, sample_mixed
from robot_rl.data.replay import ReplayBuffer
from robot_rl.runtime.config import TrainConfig
from robot_rl.runtime.metrics import MetricsSink

log = logging.getLogger(__name__)

CHECKPOINT_SCHEMA = 2
METRICS_EVERY_UPDATES = 50


@dataclass
class Counters:
    env_steps: int = 0
    updates: int = 0
    episodes: int = 0
    interventions: int = 0


def spaces_of(step: Transition) -> tuple[gym.spaces.Dict, gym.spaces.Box]:
    """The observation and action spaces a step was taken in (images uint8, state float32)."""
    spaces = {
        key: gym.spaces.Box(0, 255, value.shape, np.uint8)
        if value.dtype == np.uint8
        else gym.spaces.Box(-np.inf, np.inf, value.shape, np.float32)
        for key, value in step.obs.items()
    }
    return gym.spaces.Dict(spaces), gym.spaces.Box(-1.0, 1.0, step.action.shape, np.float32)


def checkpoint_counters(path: Path) -> Counters | None:
    """The counters of a checkpoint on disk (None if there is none); CheckpointError if it
    cannot be read. Reads the schema-1 extras of older learner processes too."""
    if not path.is_file():
        return None
    return _counters(read_checkpoint(path)["extra"])


def _counters(extra: dict[str, Any]) -> Counters:
    if "counters" in extra:
        return Counters(**extra["counters"])
    return Counters(env_steps=int(extra.get("steps_received", 0)),
                    updates=int(extra.get("updates", 0)))  # fmt: skip


class WeightsLink(Protocol):
    """The learner's end of a link, as far as publishing goes."""

    def publish_weights(self, state_dict: Any, version: int, half: bool = False,
                        health: Any = None) -> int: ...  # fmt: skip


class ReplaySink:
    """A learner link's sink: every step into the online buffer, interventions into the demo
    buffer too. Steps of different actors, or after a break in one actor's stream, never join
    one replay episode. ``on_first_step`` is called (under the lock) with the first step ever."""

    def __init__(self, demo: ReplayBuffer, online: ReplayBuffer, lock: threading.Lock) -> None:
        self.demo, self.online, self.lock = demo, online, lock
        self.steps = 0
        self.on_first_step: Any = None
        self._last_actor: str | None = None

    def __call__(self, actor_id: str, steps: list[Transition], discontinuity: bool) -> None:
        with self.lock:
            if self.on_first_step is not None and steps:
                self.on_first_step(steps[0])
                self.on_first_step = None
            if discontinuity or actor_id != self._last_actor:
                self.online.close_episode()
                self.demo.close_episode()
            self._last_actor = actor_id
            for step in steps:
                route(step, self.demo, self.online)
            self.steps += len(steps)

    def relabel(self, relabel: StepRelabel) -> bool:
        """Withdraw an operator's mark from the replay's copy of the step (online, and demo for
        an intervened step); False when neither buffer holds it any more."""
        with self.lock:
            found = [buffer.relabel_step(relabel.action, relabel.next_state,
                                         relabel.restored.reward, relabel.restored.terminated)
                     for buffer in (self.online, self.demo)]  # fmt: skip
        if not any(found):
            log.warning("replay: the step of the withdrawn %s mark (seq %d) is no longer held",
                        relabel.undone, relabel.last_seq)  # fmt: skip
        return any(found)


class LearnerCore:
    """See the module docstring. ``run_dir``: the run's directory (checkpoints/, demos/,
    episodes/ inside it); ``metrics``: where update metrics go (None: nowhere);
    ``publish_every``: updates between weight publications from ``learn_once`` (None: the
    caller publishes on its own schedule)."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        metrics: MetricsSink | None = None,
        publish_every: int | None = None,
    ) -> None:
        self.config, self.dir, self.metrics = config, Path(run_dir), metrics
        self.publish_every = publish_every
        for sub in ("checkpoints", "demos", "episodes"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = self.dir / "checkpoints" / "latest.pt"
        self.demo = ReplayBuffer(config.replay_capacity, config.agent.discount, config.n_step)
        self.online = ReplayBuffer(config.replay_capacity, config.agent.discount, config.n_step)
        self.lock = threading.Lock()  # the buffers and the sink
        self.agent_lock = threading.Lock()  # the agent while updating or snapshotting
        self.sink = ReplaySink(self.demo, self.online, self.lock)
        self.counters = Counters()
        self.evaluations: list[dict[str, float]] = []
        self.agent: SACAgent | None = None
        self.link: WeightsLink | None = None
        self.last_checkpoint = "none yet"
        self.last_loss = float("nan")  # the newest update's critic loss (for the console)
        on_disk = checkpoint_counters(self.checkpoint_path)
        self._on_disk_updates = on_disk.updates if on_disk is not None else -1
        self._rate_mark = (time.monotonic(), 0)
        self._metrics_mark = (time.monotonic(), 0)

    # -- data ----------------------------------------------------------------------------------
    def load_dir(self, directory: Path, demos_only: bool) -> int:
        """Replay a folder of episodes into the buffers (demos: the demo buffer only; stored
        episodes: routed as received). Returns the steps loaded."""
        steps = 0
        for episode in load_episodes(directory):
            with self.lock:
                for t in episode.transitions:
                    if demos_only:
                        self.demo.add(t)
                    else:
                        route(t, self.demo, self.online)
                self.demo.close_episode()  # an episode cut off by a crash ends with its file
                self.online.close_episode()
            if self.agent is None and episode.transitions:
                self.build_agent(*spaces_of(episode.transitions[0]))
            steps += len(episode.transitions)
        return steps

    def build_agent(self, observation_space: gym.spaces.Dict, action_space: gym.spaces.Box) -> None:
        """Build the agent for these spaces (once; later calls are ignored)."""
        if self.agent is None:
            torch.manual_seed(self.config.seed)
            self.agent = SACAgent(observation_space, action_space, self.config.agent,
                                  self.config.seed)  # fmt: skip
            if attach_configured_feature_caches(self.agent, [self.demo, self.online]):
                log.info("frozen encoder: camera frames are encoded once, into %s feature caches",
                         self.config.agent.feature_cache)  # fmt: skip

    def build_on_first_step(self) -> None:
        """Build the agent from the first step an actor sends (when nothing on disk had one)."""
        if self.agent is None:
            self.sink.on_first_step = lambda step: self.build_agent(*spaces_of(step))

    # -- checkpoints ---------------------------------------------------------------------------
    def resume(self) -> None:
        """Load ``latest.pt`` into the agent (which must exist) and take its counters."""
        if self.agent is None:
            raise RuntimeError("build the agent before resuming (load the run's demos first)")
        extra = load_checkpoint(self.checkpoint_path, self.agent)
        self.counters = _counters(extra)
        self.evaluations = list(extra.get("evaluations", []))
        self._on_disk_updates = self.counters.updates

    def checkpoint(self) -> None:
        """Write ``latest.pt`` (the schema in the module docstring). A checkpoint on disk with
        more updates is kept as ``latest.prev.pt`` (logged), not lost."""
        if self.agent is None:
            log.warning("no checkpoint written: no step has arrived yet, so there is no agent")
            return
        with self.agent_lock:
            updates = self.counters.updates
            if updates < self._on_disk_updates:
                previous = self.checkpoint_path.with_name("latest.prev.pt")
                os.replace(self.checkpoint_path, previous)
                log.warning("checkpoint of %d updates kept as %s; %s now holds %d updates",
                            self._on_disk_updates, previous, self.checkpoint_path.name,
                            updates)  # fmt: skip
            extra = {"schema": CHECKPOINT_SCHEMA, "counters": asdict(self.counters),
                     "evaluations": self.evaluations, "config": to_dict(self.config)}  # fmt: skip
            save_checkpoint(self.checkpoint_path, self.agent, extra)
            self._on_disk_updates = updates
        self.last_checkpoint = time.strftime("%H:%M:%S")

    # -- learning ------------------------------------------------------------------------------
    def due_batch(self) -> Batch | None:
        """The next learner step's batch (``utd_ratio`` minibatches, each mixed 50/50), or None
        while the learner would run ahead of the data (see the module docstring)."""
        cfg = self.config
        with self.lock:
            if self.agent is None or len(self.demo) + len(self.online) == 0:
                return None
            if self.counters.env_steps - cfg.learning_starts <= self.counters.updates:
                return None
            return sample_mixed(self.demo, self.online, cfg.batch_size * cfg.agent.utd_ratio,
                                self.agent.device, minibatches=cfg.agent.utd_ratio)  # fmt: skip

    def learn_once(self) -> bool:
        """One learner step if the data allows it (False if not); metrics every
        ``METRICS_EVERY_UPDATES`` updates, weights every ``publish_every``."""
        batch = self.due_batch()
        if batch is None:
            return False
        assert self.agent is not None  # due_batch checked
        with self.agent_lock:
            metrics = self.agent.update(batch)
        self.last_loss = metrics.get("critic_loss", float("nan"))
        self.counters.updates += 1
        if self.publish_every and self.counters.updates % self.publish_every == 0:
            self.publish()
        if self.counters.updates % METRICS_EVERY_UPDATES == 0:
            now = time.monotonic()
            last_t, last_updates = self._metrics_mark
            self._metrics_mark = (now, self.counters.updates)
            metrics["updates_per_s"] = (self.counters.updates - last_updates) / max(
                now - last_t, 1e-9
            )
            metrics["utd"] = self.utd
            for key, value in metrics.items():
                self.scalar(f"learner/{key}", value)
        return True

    @property
    def utd(self) -> float:
        """Critic updates per online step so far."""
        return self.counters.updates * self.config.agent.utd_ratio / max(1, self.counters.env_steps)

    def scalar(self, tag: str, value: float) -> None:
        if self.metrics is not None:
            self.metrics.scalar(tag, float(value), self.counters.env_steps)

    def publish(self, half: bool = False, health: dict[str, float | str] | None = None) -> int:
        """Publish the policy weights on ``self.link`` (versioned by updates); their bytes."""
        if self.agent is None or self.link is None:
            return 0
        with self.agent_lock:
            state = self.agent.policy_state_dict()
            return self.link.publish_weights(state, self.counters.updates, half=half,
                                             health=health)  # fmt: skip

    def health(self) -> dict[str, float | str]:
        """What the operator console shows of the learner."""
        now = time.monotonic()
        last_t, last_updates = self._rate_mark
        self._rate_mark = (now, self.counters.updates)
        rate = (self.counters.updates - last_updates) / max(now - last_t, 1e-6)
        health: dict[str, float | str] = {
            "updates": self.counters.updates, "updates_per_s": rate, "utd": self.utd,
            "utd_target": self.config.agent.utd_ratio, "demo_buffer": len(self.demo),
            "online_buffer": len(self.online), "steps_received": self.counters.env_steps,
            "last_checkpoint": self.last_checkpoint,
        }  # fmt: skip
        if math.isfinite(self.last_loss):  # none before the first update
            health["loss"] = self.last_loss
        return health
