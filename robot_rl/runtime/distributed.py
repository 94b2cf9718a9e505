"""Actor and learner as separate processes over ZMQ (``robot-rl actor`` / ``robot-rl learner``).

The learner owns the agent, the replay buffers and the run directory: it records or loads the
demos, takes every actor's steps through a ``LearnerLink`` (stored durably in
``<run>/episodes/``, routed into the online buffer and, when intervened, the demo buffer), runs
updates while holding the update-to-data ratio against the steps received (it never runs ahead of
the data; it cannot make a robot wait), publishes the policy weights every ``weights_period_s``,
and writes checkpoints. The actor owns the env (and the intervener): it acts with its newest
weights, swaps new ones in between steps, and streams every step through an ``ActorLink``,
which holds what the learner has not stored yet. Either side can restart; see the links.

Both read the same ``TrainConfig`` (the run's config.yaml) plus a ``DistributedConfig``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from robot_rl.agents.checkpoint import load_checkpoint, save_checkpoint
from robot_rl.agents.sac import SACAgent
from robot_rl.config import to_dict
from robot_rl.console.bridge import episode_success, operator_setup
from robot_rl.data.episodes import load_episodes
from robot_rl.data.mixing import route
from robot_rl.data.replay import ReplayBuffer
from robot_rl.envs.intervention import ScriptedIntervener
from robot_rl.envs.twin_env import make_env
from robot_rl.runtime.loops import ReplaySink, act_once, due_batch, swap_weights
from robot_rl.runtime.record import record_demos
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


class Learner:
    """The learner process (see module docstring). ``run(duration_s)`` serves until stopped."""

    def __init__(self, train: TrainConfig, net: DistributedConfig, resume: bool = False) -> None:
        self.train, self.net = train, net
        self.dir = Path(train.run_dir) / train.run_name
        for sub in ("checkpoints", "demos", "episodes"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        cfg_path = self.dir / "config.yaml"
        if not cfg_path.exists():
            cfg_path.write_text(yaml.safe_dump(to_dict(train), sort_keys=False))
        torch.manual_seed(train.seed)
        # For the spaces, and to record scripted demos: always the in-process twin (a remote env
        # belongs to the actor, next to the arm).
        env = make_env(dataclasses.replace(train.env, remote=None))
        self.agent = SACAgent(env.observation_space, env.action_space, train.agent, train.seed)
        self.demo = ReplayBuffer(train.replay_capacity, train.agent.discount, train.n_step)
        self.online = ReplayBuffer(train.replay_capacity, train.agent.discount, train.n_step)
        self.updates = 0
        self._health_mark = (time.monotonic(), 0)
        self.last_checkpoint = "none yet"
        checkpoint = self.dir / "checkpoints" / "latest.pt"
        if resume and checkpoint.is_file():
            extra = load_checkpoint(checkpoint, self.agent)
            self.updates = int(extra.get("updates", 0))
            log.info("learner: resumed at %d updates", self.updates)
        demo_dir = self.dir / "demos"
        if train.demos > 0 and not any(demo_dir.glob("episode_*.npz")):
            record_demos(env, train.demos, demo_dir, seed=train.seed + 10_000)
        env.close()
        for episode in load_episodes(demo_dir):
            for t in episode.transitions:
                self.demo.add(t)
            self.demo.close_episode()
        self._lock = threading.Lock()
        self.sink = ReplaySink(self.demo, self.online, self._lock)
        # The link restores what earlier runs stored; replay them into the buffers first.
        for episode in load_episodes(self.dir / "episodes"):
            for t in episode.transitions:
                route(t, self.demo, self.online)
            self.online.close_episode()
            self.demo.close_episode()
        self.link = LearnerLink(
            net.endpoints, net.security, self.dir / "episodes", self.sink, train.env.task
        )
        self.sink.steps = len(self.online)
        log.info("learner: %d demo and %d online steps; listening on %s (weights %s)",
                 len(self.demo), len(self.online), self.link.transitions_endpoint,
                 self.link.weights_endpoint)  # fmt: skip

    def _update_once(self) -> bool:
        cfg = self.train
        batch = due_batch(self.sink, self.sink.steps, self.updates, cfg.learning_starts,
                          cfg.batch_size, cfg.agent.utd_ratio, self.agent.device)  # fmt: skip
        if batch is None:
            return False
        self.agent.update(batch)
        self.updates += 1
        return True

    @property
    def steps_received(self) -> int:
        """Online steps in replay: loaded from earlier runs plus received from actors."""
        return self.sink.steps

    def publish(self) -> int:
        return self.link.publish_weights(
            self.agent.policy_state_dict(), self.updates, half=self.net.weights_half,
            health=self.health(),
        )  # fmt: skip

    def health(self) -> dict[str, float | str]:
        """What the operator console shows of the learner (sent with the weights)."""
        now = time.monotonic()
        last_t, last_updates = self._health_mark
        self._health_mark = (now, self.updates)
        utd = self.updates * self.train.agent.utd_ratio / max(1, self.steps_received)
        return {"updates": self.updates, "updates_per_s": (self.updates - last_updates)
                / max(now - last_t, 1e-6), "utd": utd, "demo_buffer": len(self.demo),
                "online_buffer": len(self.online), "steps_received": self.steps_received,
                "last_checkpoint": self.last_checkpoint}  # fmt: skip

    def checkpoint(self) -> None:
        extra = {"updates": self.updates, "steps_received": self.steps_received}
        save_checkpoint(self.dir / "checkpoints" / "latest.pt", self.agent, extra)
        self.last_checkpoint = time.strftime("%H:%M:%S")

    def run(self, duration_s: float | None = None, stop: threading.Event | None = None) -> None:
        """Serve and learn until ``duration_s`` passes, ``stop`` is set, or Ctrl-C."""
        stop = stop or threading.Event()
        start = last_weights = last_ckpt = last_status = time.monotonic()
        self.publish()
        print(
            f"learner: serving on {self.net.endpoints.transitions} (weights on "
            f"{self.net.endpoints.weights})",
            flush=True,
        )
        try:
            while not stop.is_set():
                now = time.monotonic()
                if duration_s is not None and now - start >= duration_s:
                    break
                self.link.poll(timeout_ms=0 if self._update_once() else 5)
                if now - last_weights >= self.net.weights_period_s:
                    self.publish()
                    last_weights = now
                if now - last_ckpt >= self.net.checkpoint_period_s:
                    self.checkpoint()
                    last_ckpt = now
                if now - last_status >= self.net.status_period_s:
                    log.info("learner: %d updates, %d steps received, actors %s",
                             self.updates, self.steps_received, self.link.status())  # fmt: skip
                    last_status = now
        except KeyboardInterrupt:
            log.info("learner: interrupted; saving a checkpoint")
        finally:
            self.checkpoint()
            self.link.close()


class Actor:
    """The actor process: acts on the env, streams steps, swaps in the newest weights; with
    ``console.enabled`` it serves the operator console and takes the operator's controls."""

    def __init__(self, train: TrainConfig, net: DistributedConfig, spool_dir: str | Path) -> None:
        self.train, self.net = train, net
        self.env = make_env(train.env)
        self.agent = SACAgent(
            self.env.observation_space, self.env.action_space, train.agent, train.seed
        )
        scripted = None
        if train.interventions:
            if train.env.remote is not None:
                raise ValueError(
                    "the scripted intervener needs the in-process twin; with env.remote set "
                    "interventions: false (the operator intervenes through the console)"
                )
            scripted = ScriptedIntervener()
        cameras = list(train.env.cameras) if train.env.obs == "pixels" else []
        self.operator = operator_setup(self.env, train.console, train.teleop, scripted, cameras)
        self.wrapped = self.operator.env
        self.link = ActorLink(
            ActorLinkConfig(actor_id=net.actor_id, transitions_endpoint=net.endpoints.transitions,
                            weights_endpoint=net.endpoints.weights, spool_dir=str(spool_dir)),
            net.security,
        )  # fmt: skip
        self.episodes = 0
        self.successes: list[float] = []
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self, steps: int, seed: int = 0) -> dict[str, float]:
        """Act for ``steps`` env steps (finishing at a step boundary); returns episode stats."""
        rng = np.random.default_rng([seed, self.link.next_seq])
        bridge, hub = self.operator.bridge, self.operator.hub
        obs, _ = self.wrapped.reset(seed=int(rng.integers(2**31 - 1)))
        episode_return, episode_steps, episode_interventions = 0.0, 0, 0
        if bridge is not None:
            bridge.start_episode()
        print(f"actor: acting as {self.net.actor_id}", flush=True)
        try:
            for step in range(steps):
                if self._stop.is_set():
                    break
                request = bridge.before_step(should_stop=self._stop.is_set) if bridge else None
                if self._stop.is_set():
                    break
                if request is not None and request.reset:
                    self.link.end_episode()
                    obs, _ = self.wrapped.reset(seed=int(rng.integers(2**31 - 1)))
                    episode_return, episode_steps, episode_interventions = 0.0, 0, 0
                    bridge.start_episode()
                    continue
                swap_weights(self.link, self.agent)  # between steps, never mid-step
                next_obs, reward, terminated, truncated, info, t = act_once(
                    self.wrapped, self.agent, obs, self.link, request.label if request else None
                )
                obs = next_obs
                episode_return += reward
                episode_steps += 1
                episode_interventions += t.intervened
                if bridge is not None:
                    bridge.after_step(obs, info["policy_action"], info, episode_return)
                    if step % 10 == 0:
                        hub.update(weights_version=self.link.weights_version,
                                   weight_age_s=self.link.weights_age_s,
                                   held_steps=self.link.unacknowledged_steps,
                                   **self.link.learner_health)  # fmt: skip
                if terminated or truncated:
                    self.episodes += 1
                    success = episode_success(info)
                    if bridge is not None:
                        bridge.end_episode(info, episode_return, episode_interventions,
                                           episode_steps)  # fmt: skip
                    self.successes.append(float(success))
                    log.info("actor: episode %d %s; weights v%d (%.1f s old); %d steps held",
                             self.episodes, "success" if success else "failure",
                             self.link.weights_version, self.link.weights_age_s,
                             self.link.unacknowledged_steps)  # fmt: skip
                    obs, _ = self.wrapped.reset(seed=int(rng.integers(2**31 - 1)))
                    episode_return, episode_steps, episode_interventions = 0.0, 0, 0
                    if bridge is not None:
                        bridge.start_episode()
        except KeyboardInterrupt:
            log.info("actor: interrupted")
        return {
            "episodes": float(self.episodes),
            "success_rate": float(np.mean(self.successes)) if self.successes else 0.0,
            "weights_version": float(self.link.weights_version),
            "unacknowledged_steps": float(self.link.unacknowledged_steps),
        }

    def close(self, flush_timeout_s: float = 10.0) -> bool:
        """Hand over what is held (up to the timeout), then close; True if nothing is left."""
        self.link.end_episode()  # the learner stores the open episode as unfinished
        done = self.link.flush(flush_timeout_s)
        self.link.close()
        self.operator.close()
        self.env.close()
        return done
