"""A training session in one process: an actor loop and a learner thread joined by the in-process
link (``robot_rl.transport.inprocess``), the same link calls that ``robot-rl actor`` /
``robot-rl learner`` make over ZMQ, and the same actor step and replay sink (``runtime.loops``).

The actor steps the env with its own policy copy (the learner publishes weights every
``policy_sync_every`` updates and the actor swaps them in between steps), lets the intervener take
over when configured and hands every step to the link. The learner side of the link stores each
finished episode on disk and routes every step into the online buffer (interventions into the demo
buffer too, as HIL-SERL does). The learner samples 50/50 demo/online batches and updates the
agent, holding the update-to-data ratio: it never runs ahead of the data, and the actor waits
when the learner falls more than ``utd_slack`` updates behind (so results in env steps do not
depend on the CPU's speed; a real robot cannot wait, which is why ``robot-rl learner`` does not).
With ``concurrent: false`` the actor makes the learner step itself between env steps: slower in
wall time, but a seed fixes the whole run (tests and benchmarks use it).

Run directory layout (``runs/<name>/``): config.yaml, checkpoints/latest.pt, demos/ and episodes/
(one .npz per episode, see ``robot_rl.data.episodes``), tb/ (TensorBoard), eval.jsonl,
learning_curve.png.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from robot_rl.agents.checkpoint import load_checkpoint, save_checkpoint
from robot_rl.agents.config import SACConfig
from robot_rl.agents.sac import SACAgent
from robot_rl.config import from_dict, to_dict
from robot_rl.console.bridge import ConsoleBridge, OperatorSetup, operator_setup
from robot_rl.console.hub import ConsoleHub
from robot_rl.console.server import ConsoleConfig, ConsoleServer
from robot_rl.data.episodes import load_episodes
from robot_rl.data.mixing import route
from robot_rl.data.replay import ReplayBuffer
from robot_rl.envs.intervention import ScriptedIntervener
from robot_rl.envs.twin_env import TwinEnv, TwinEnvConfig, make_env
from robot_rl.runtime.loops import ReplaySink, act_once, due_batch, swap_weights
from robot_rl.runtime.record import record_demos
from robot_rl.teleop.command import TeleopConfig
from robot_rl.transport.inprocess import InProcessTransport

log = logging.getLogger(__name__)

ACTOR_ID = "train"


@dataclass(frozen=True)
class TrainConfig:
    """One sim training session (the env config names the task and the observation mode)."""

    env: TwinEnvConfig = field(default_factory=TwinEnvConfig)
    agent: SACConfig = field(default_factory=SACConfig)
    seed: int = 0
    env_steps: int = 20_000
    demos: int = 20  # scripted-expert demos recorded into the run before training (0: none)
    interventions: bool = True  # the scripted intervener stands in for the operator
    learning_starts: int = 100  # online steps before the first update
    batch_size: int = 256
    replay_capacity: int = 200_000
    n_step: int = 1
    concurrent: bool = True  # learner in its own thread; False: update between env steps
    utd_slack: int = 20  # updates the learner may lag before the actor waits
    policy_sync_every: int = 10  # learner updates between actor policy snapshots
    eval_every: int = 2_000  # env steps between deterministic evaluations (0: only at the end)
    eval_episodes: int = 10
    checkpoint_every: int = 2_000
    run_dir: str = "runs"
    name: str = ""  # default: <task>-<obs>-<seed>
    console: ConsoleConfig = field(default_factory=ConsoleConfig)  # the operator's web page
    # The operator's device: "console" (the page's keys and gamepad), spacemouse, gamepad.
    teleop: TeleopConfig = field(default_factory=lambda: TeleopConfig(device="console"))

    def __post_init__(self) -> None:
        for name in ("env_steps", "batch_size", "replay_capacity", "n_step", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; must be >= 1")
        if self.demos < 0 or self.learning_starts < 0:
            raise ValueError("demos and learning_starts must be >= 0")

    @property
    def run_name(self) -> str:
        return self.name or f"{self.env.task}-{self.env.obs}-{self.seed}"


@dataclass
class Counters:
    env_steps: int = 0
    updates: int = 0
    episodes: int = 0
    interventions: int = 0


class TrainingSession:
    """Builds everything for a ``TrainConfig`` and runs it (``run()``); resumable from its dir."""

    def __init__(self, config: TrainConfig, resume: bool = False) -> None:
        self.config = config
        self.dir = Path(config.run_dir) / config.run_name
        self._prepare_dir(resume)
        torch.manual_seed(config.seed)
        self.env = make_env(config.env)
        self.eval_env = make_env(config.env)
        self.agent = SACAgent(
            self.env.observation_space, self.env.action_space, config.agent, config.seed
        )
        self.demo = ReplayBuffer(config.replay_capacity, config.agent.discount, config.n_step)
        self.online = ReplayBuffer(config.replay_capacity, config.agent.discount, config.n_step)
        self.counters = Counters()
        self.recent_success: deque[float] = deque(maxlen=20)
        self.recent_return: deque[float] = deque(maxlen=20)
        self.recent_interventions: deque[float] = deque(maxlen=20)
        self.evaluations: list[dict[str, float]] = []
        self._lock = threading.Lock()  # replay buffers and counters
        self._agent_lock = threading.Lock()  # the learner's agent while snapshotting
        self._stop = threading.Event()
        self._learner_error: BaseException | None = None
        self._policy = SACAgent(
            self.env.observation_space, self.env.action_space, config.agent, config.seed
        )
        self._writer = None
        self._weights_version, self._weights_at = -1, time.perf_counter()
        self._last_checkpoint = "none yet"
        self.hub: ConsoleHub | None = None
        self.console: ConsoleServer | None = None
        self._operator: OperatorSetup | None = None
        if resume:
            self._resume()
        else:
            self._load_or_record_demos()
        self.sink = ReplaySink(self.demo, self.online, self._lock)
        self.transport = InProcessTransport()
        self.learner_link = self.transport.learner(
            self.dir / "episodes", self.sink, config.env.task
        )
        first_seq = self.learner_link.store.durable.get(ACTOR_ID, -1) + 1
        self.actor_link = self.transport.actor(ACTOR_ID, first_seq)
        self._publish()

    # -- setup ---------------------------------------------------------------------------------
    def _prepare_dir(self, resume: bool) -> None:
        cfg_path = self.dir / "config.yaml"
        if resume:
            if not (self.dir / "checkpoints" / "latest.pt").is_file():
                raise FileNotFoundError(
                    f"nothing to resume in {self.dir}: no checkpoints/latest.pt; start without "
                    "--resume"
                )
        elif cfg_path.exists():
            raise FileExistsError(
                f"{self.dir} already holds a run; pass --resume to continue it or choose --name"
            )
        for sub in ("checkpoints", "demos", "episodes", "tb"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        if not resume:
            cfg_path.write_text(yaml.safe_dump(to_dict(self.config), sort_keys=False))

    def _load_or_record_demos(self) -> None:
        demo_dir = self.dir / "demos"
        if self.config.demos > 0:
            record_demos(self.env, self.config.demos, demo_dir, seed=self.config.seed + 10_000)
        self._replay_dir(demo_dir, into_demo_only=True)

    def _replay_dir(self, directory: Path, into_demo_only: bool) -> None:
        for episode in load_episodes(directory):
            for t in episode.transitions:
                if into_demo_only:
                    self.demo.add(t)
                else:
                    route(t, self.demo, self.online)
            self.demo.close_episode()  # an episode cut off by a crash ends with its file
            self.online.close_episode()

    def _resume(self) -> None:
        extra = load_checkpoint(self.dir / "checkpoints" / "latest.pt", self.agent)
        self.counters = Counters(**extra["counters"])
        self.evaluations = list(extra.get("evaluations", []))
        self._replay_dir(self.dir / "demos", into_demo_only=True)
        self._replay_dir(self.dir / "episodes", into_demo_only=False)
        log.info(
            "resumed %s at %d env steps, %d updates; replay %d demo + %d online transitions",
            self.dir, self.counters.env_steps, self.counters.updates, len(self.demo),
            len(self.online),
        )  # fmt: skip

    # -- running -------------------------------------------------------------------------------
    def run(self) -> dict[str, float]:
        """Train until ``env_steps``; returns the final evaluation."""
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(self.dir / "tb"))
        self._last_log, self._updates_at_log = time.perf_counter(), self.counters.updates
        learner = None
        if self.config.concurrent:
            learner = threading.Thread(target=self._learner_thread, name="learner", daemon=True)
            learner.start()
        try:
            self._actor_loop()
        finally:
            self._stop.set()
            if learner is not None:
                learner.join()
            if self._operator is not None:
                self._operator.close()
            self.actor_link.end_episode()  # the open episode is stored, as unfinished
            self.learner_link.poll()
        if self._learner_error is not None:
            raise RuntimeError("the learner failed; see the log") from self._learner_error
        final = self.evaluate(self.config.eval_episodes)
        self._checkpoint()
        self._plot()
        self._writer.close()
        return final

    def stop(self) -> None:
        """Ask a running session to finish (from another thread): it stores the open episode,
        evaluates, checkpoints and returns from ``run``."""
        self._stop.set()

    def _actor_loop(self) -> None:
        cfg = self.config
        env, bridge = self._actor_env()
        rng = np.random.default_rng([cfg.seed, self.counters.env_steps])  # fresh seeds on resume
        obs, _ = env.reset(seed=int(rng.integers(2**31 - 1)))
        if bridge is not None:
            bridge.start_episode()
        episode_steps = 0
        episode_return = 0.0
        episode_interventions = 0
        start = time.perf_counter()
        start_steps = self.counters.env_steps
        with tqdm(
            total=cfg.env_steps, initial=self.counters.env_steps, desc="train", unit="step"
        ) as bar:
            while self.counters.env_steps < cfg.env_steps and not self._stop.is_set():
                request = bridge.before_step(should_stop=self._stop.is_set) if bridge else None
                if self._stop.is_set():  # asked to finish while paused or stopped
                    break
                if request is not None and request.reset:  # the operator restarts the episode
                    self.actor_link.end_episode()
                    episode_steps, episode_return, episode_interventions = 0, 0.0, 0
                    obs, _ = env.reset(seed=int(rng.integers(2**31 - 1)))
                    bridge.start_episode()
                    continue
                if cfg.concurrent:
                    self._wait_for_learner()
                else:
                    self._learn_once()  # in step: deterministic for a seed
                if self._learner_error is not None:
                    return
                version = swap_weights(self.actor_link, self._policy)
                if version is not None:
                    self._weights_version, self._weights_at = version, time.perf_counter()
                next_obs, reward, terminated, truncated, info, t = act_once(
                    env, self._policy, obs, self.actor_link, request.label if request else None
                )
                intervened = t.intervened
                with self._lock:
                    self.counters.env_steps += 1
                    self.counters.interventions += intervened
                episode_steps += 1
                episode_return += reward
                episode_interventions += intervened
                obs = next_obs
                bar.update(1)
                if bridge is not None:
                    bridge.after_step(obs, info["policy_action"], info, episode_return)
                    if self.counters.env_steps % 10 == 0:
                        self._console_health()
                if terminated or truncated:
                    self._end_episode(info, episode_return, episode_interventions, episode_steps)
                    if bridge is not None:
                        bridge.end_episode(info, episode_return, episode_interventions,
                                           episode_steps)  # fmt: skip
                    episode_steps, episode_return, episode_interventions = 0, 0.0, 0
                    obs, _ = env.reset(seed=int(rng.integers(2**31 - 1)))
                    if bridge is not None:
                        bridge.start_episode()
                steps = self.counters.env_steps
                if steps % 100 == 0:
                    rate = (steps - start_steps) / (time.perf_counter() - start)
                    self._scalar("actor/env_steps_per_s", rate)
                    bar.set_postfix(
                        success=f"{np.mean(self.recent_success or [0]):.2f}",
                        upd=self.counters.updates,
                    )
                if cfg.eval_every and steps % cfg.eval_every == 0:
                    self.evaluate(cfg.eval_episodes)
                if cfg.checkpoint_every and steps % cfg.checkpoint_every == 0:
                    self._checkpoint()

    def _actor_env(self) -> tuple[Any, ConsoleBridge | None]:
        """The env the actor steps (with its interveners) and the console bridge, if any."""
        cfg = self.config
        cameras = list(cfg.env.cameras) if cfg.env.obs == "pixels" else []
        scripted = ScriptedIntervener() if cfg.interventions else None
        setup = operator_setup(self.env, cfg.console, cfg.teleop, scripted, cameras)
        self.hub, self.console = setup.hub, setup.server
        self._operator = setup
        return setup.env, setup.bridge

    def _console_health(self) -> None:
        cfg = self.config
        now = time.perf_counter()
        last_t, last_updates = getattr(self, "_health_mark", (now, self.counters.updates))
        self._health_mark = (now, self.counters.updates)
        if now > last_t:
            self.hub.update(updates_per_s=(self.counters.updates - last_updates) / (now - last_t))
        utd = self.counters.updates * cfg.agent.utd_ratio / max(1, self.counters.env_steps)
        self.hub.update(utd=utd, updates=self.counters.updates, demo_buffer=len(self.demo),
                        online_buffer=len(self.online), env_steps=self.counters.env_steps,
                        weights_version=self._weights_version,
                        weight_age_s=now - self._weights_at,
                        last_checkpoint=self._last_checkpoint)  # fmt: skip

    def _end_episode(self, info: dict[str, Any], ret: float, interventions: int, n: int) -> None:
        self.counters.episodes += 1
        self.recent_success.append(float(info["success"]))
        self.recent_return.append(ret)
        self.recent_interventions.append(interventions / n)
        self._scalar("actor/success_rate", float(np.mean(self.recent_success)))
        self._scalar("actor/return", float(np.mean(self.recent_return)))
        self._scalar("actor/intervention_rate", float(np.mean(self.recent_interventions)))
        self._scalar("actor/episode_steps", n)

    def _wait_for_learner(self) -> None:
        """Hold the update-to-data ratio: wait while the learner lags by more than the slack."""
        cfg = self.config
        while not self._stop.is_set() and self._learner_error is None:
            online = self.counters.env_steps
            behind = (online - cfg.learning_starts) - self.counters.updates
            if online < cfg.learning_starts or behind <= cfg.utd_slack:
                return
            time.sleep(0.001)

    def _learner_thread(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._learn_once():
                    time.sleep(0.002)  # never run ahead of the data
        except BaseException as exc:  # surfaced by run(); the actor stops waiting on it
            log.exception("learner failed")
            self._learner_error = exc

    def _learn_once(self) -> bool:
        """One learner step (``utd_ratio`` critic updates) if the data allows it; False if not."""
        cfg = self.config
        self.learner_link.poll()  # the actor's newest steps into replay and the episode store
        batch = due_batch(self.sink, self.counters.env_steps, self.counters.updates,
                          cfg.learning_starts, cfg.batch_size, cfg.agent.utd_ratio,
                          self.agent.device)  # fmt: skip
        if batch is None:
            return False
        with self._agent_lock:
            metrics = self.agent.update(batch)
        self.counters.updates += 1
        if self.counters.updates % cfg.policy_sync_every == 0:
            self._publish()
        if self.counters.updates % 50 == 0:
            now = time.perf_counter()
            for key, value in metrics.items():
                self._scalar(f"learner/{key}", value)
            self._scalar(
                "learner/updates_per_s",
                (self.counters.updates - self._updates_at_log) / (now - self._last_log),
            )
            utd = self.counters.updates * cfg.agent.utd_ratio / max(1, self.counters.env_steps)
            self._scalar("learner/utd", utd)
            self._last_log, self._updates_at_log = now, self.counters.updates
        return True

    def _publish(self) -> None:
        with self._agent_lock:
            self.learner_link.publish_weights(self.agent.policy_state_dict(), self.counters.updates)

    # -- evaluation, checkpoints, plots --------------------------------------------------------
    def evaluate(self, episodes: int) -> dict[str, float]:
        """Deterministic policy on ``episodes`` seeded episodes of the eval env."""
        with self._agent_lock:
            policy = copy.deepcopy(self.agent)
        result = evaluate_policy(policy, self.eval_env, episodes, seed=self.config.seed + 50_000)
        result["env_steps"] = float(self.counters.env_steps)
        self.evaluations.append(result)
        self._scalar("eval/success_rate", result["success_rate"])
        self._scalar("eval/return", result["return"])
        with (self.dir / "eval.jsonl").open("a") as fh:
            fh.write(json.dumps(result) + "\n")
        log.info("eval at %d steps: %s", self.counters.env_steps, result)
        return result

    def _checkpoint(self) -> None:
        self._last_checkpoint = time.strftime("%H:%M:%S")
        with self._agent_lock:
            save_checkpoint(
                self.dir / "checkpoints" / "latest.pt",
                self.agent,
                {
                    "counters": dict(vars(self.counters)),
                    "evaluations": self.evaluations,
                    "config": to_dict(self.config),
                },
            )

    def _scalar(self, tag: str, value: float) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, value, self.counters.env_steps)

    def _plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [e["env_steps"] for e in self.evaluations]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(steps, [e["success_rate"] for e in self.evaluations], marker="o")
        ax.set(xlabel="env steps", ylabel="eval success rate", ylim=(-0.05, 1.05))
        ax.set_title(f"{self.config.env.task} ({self.config.env.obs})")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(self.dir / "learning_curve.png", dpi=100)
        plt.close(fig)


def evaluate_policy(agent: SACAgent, env: TwinEnv, episodes: int, seed: int) -> dict[str, float]:
    """Success rate and mean return of the deterministic policy over seeded episodes."""
    successes, returns, lengths = [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, steps, done = 0.0, 0, False
        info: dict[str, Any] = {"success": False}
        while not done:
            obs, reward, terminated, truncated, info = env.step(agent.act(obs, deterministic=True))
            total += reward
            steps += 1
            done = terminated or truncated
        successes.append(float(info["success"]))
        returns.append(total)
        lengths.append(steps)
    return {
        "success_rate": float(np.mean(successes)),
        "return": float(np.mean(returns)),
        "episode_steps": float(np.mean(lengths)),
        "episodes": float(episodes),
    }


def load_train_config(run_dir: Path) -> TrainConfig:
    """The config a run was started with (its config.yaml)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {run_dir} is not a training run directory (or never started)"
        )
    return from_dict(TrainConfig, yaml.safe_load(path.read_text()))
