"""A training session in one process: the actor loop (``runtime.actor``) and the learner core
(``runtime.learner``) joined by the in-process link (``robot_rl.transport.inprocess``), the same
link calls that ``robot-rl actor`` / ``robot-rl learner`` make over ZMQ.

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

The progress bar's ``assisted_success`` and TensorBoard's ``actor/success_rate`` and
``actor/return`` are over the newest 20 training episodes, interventions and the operator's marks
included (``runtime.episode_tally``); an operator's undo of a mark corrects them once, as it
relabels the stored episode and its replay copy.

SIGINT and SIGTERM finish the session cleanly: the open episode is stored (as unfinished), then the
checkpoint and the learning curve are written (a second signal aborts). Checkpoints are also
written every ``checkpoint_every`` env steps and every ``checkpoint_every_min`` minutes.

Run directory layout (``runs/<name>/``): config.yaml, checkpoints/latest.pt, demos/ and episodes/
(one .npz per episode, see ``robot_rl.data.episodes``), tb/ (TensorBoard), eval.jsonl,
learning_curve.png. Everything a run owns lives inside it: a moved run resumes where it now is.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import yaml
from tqdm import tqdm

from robot_rl.agents.threads import apply_thread_budget, thread_budget, thread_budget_scope
from robot_rl.agents.warm_start import pretrain_on_demos
from robot_rl.config import from_dict, to_dict
from robot_rl.console.bridge import AppliedMark, episode_success, operator_setup
from robot_rl.data.batch import Transition
from robot_rl.envs.intervention import ScriptedIntervener
from robot_rl.envs.twin_env import make_env
from robot_rl.runtime.actor import EpisodeStats, Policy, policy_loop, stop_on_signals
from robot_rl.runtime.config import TrainConfig
from robot_rl.runtime.episode_tally import EpisodeTally
from robot_rl.runtime.learner import LearnerCore
from robot_rl.runtime.metrics import MetricsSink, make_sink
from robot_rl.runtime.record import record_demos
from robot_rl.transport.inprocess import InProcessTransport

log = logging.getLogger(__name__)

ACTOR_ID = "train"
__all__ = ["TrainConfig", "TrainingSession", "evaluate_policy", "load_train_config",
           "resume_config"]  # fmt: skip


class TrainingSession:
    """Builds everything for a ``TrainConfig`` and runs it (``run()``); resumable from its dir."""

    def __init__(self, config: TrainConfig, resume: bool = False, cpus: int | None = None) -> None:
        """``cpus``: the cores the torch thread budget counts (default: those this process may
        run on); ``bench learning`` gives 1 to each of more seeds than cores sharing them."""
        self.config = config
        self.threads = thread_budget(cpus)
        self.dir = config.run_path
        self._prepare_dir(resume)
        torch.manual_seed(config.seed)
        self.env = make_env(config.env)
        self.eval_env = make_env(config.env)
        self.core = LearnerCore(config, self.dir, publish_every=config.policy_sync_every)
        self.core.build_agent(self.env.observation_space, self.env.action_space)
        if resume:
            self.core.resume()
            self.core.load_dir(self.dir / "demos", demos_only=True)
            self.core.load_dir(self.dir / "episodes", demos_only=False)
            c = self.core
            log.info("resumed %s at %d env steps, %d updates; replay %d demo + %d online steps",
                     self.dir, c.counters.env_steps, c.counters.updates, len(c.demo),
                     len(c.online))  # fmt: skip
        else:
            if config.demos > 0:
                record_demos(self.env, config.demos, self.dir / "demos", seed=config.seed + 10_000)
            self.core.load_dir(self.dir / "demos", demos_only=True)
            pretrain_on_demos(self.core.agent, self.core.demo, config.demo_pretrain_updates,
                              config.batch_size, self.core.agent.device)  # fmt: skip
        # The learner core's state, under the names sessions have always had.
        core = self.core
        self.agent, self.counters, self.evaluations = core.agent, core.counters, core.evaluations
        self.demo, self.online = core.demo, core.online
        # The newest 20 finished episodes, corrected when the operator withdraws a mark.
        self.tally = EpisodeTally(window=20)
        self._bar: Any = None  # the progress bar while the actor loop runs
        self._stop = threading.Event()
        self._signalled = threading.Event()  # SIGINT / SIGTERM: stop without a final evaluation
        self._learner_error: BaseException | None = None
        self.metrics: MetricsSink | None = None
        self.policy = Policy(self.env.observation_space, self.env.action_space, config.agent,
                             config.seed)  # fmt: skip
        self.hub: Any = None
        self.console: Any = None
        self._operator: Any = None
        self.transport = InProcessTransport()
        self.learner_link = self.transport.learner(self.dir / "episodes", self.core.sink,
                                                   config.env.task)  # fmt: skip
        self.core.link = self.learner_link
        self.learner_link.on_relabel = self.core.sink.relabel  # an undone mark, in replay too
        first_seq = self.learner_link.store.durable.get(ACTOR_ID, -1) + 1
        self.actor_link = self.transport.actor(ACTOR_ID, first_seq)
        self.core.publish()

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

    # -- running -------------------------------------------------------------------------------
    def run(self) -> dict[str, float]:
        """Train until ``env_steps`` (or a stop); returns the final evaluation (after a signal:
        the latest one, without evaluating again)."""
        self.metrics = self.core.metrics = make_sink(self.config.logger, self.dir, self.config)
        # Concurrent: this thread acts, the learner thread has its own budget (set after this
        # one); in step, this thread does both.
        with thread_budget_scope("actor" if self.config.concurrent else "alone", self.threads):
            return self._run()

    def _run(self) -> dict[str, float]:
        learner = None
        if self.config.concurrent:
            learner = threading.Thread(target=self._learner_thread, name="learner", daemon=True)
            learner.start()
        try:
            with stop_on_signals(self._signalled, "training"):
                self._actor_loop()
        except KeyboardInterrupt:  # a second signal, or no handler (not the main thread)
            log.warning("interrupted: storing the open episode and saving a checkpoint")
            self._signalled.set()
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
        final = self._final_evaluation()
        self.core.checkpoint()
        self._plot()
        self.metrics.close()
        if self.interrupted:
            print(f"stopped at {self.counters.env_steps} env steps; resume with --resume "
                  f"(run directory {self.dir})", flush=True)  # fmt: skip
        return final

    @property
    def interrupted(self) -> bool:
        """The run was stopped by SIGINT or SIGTERM."""
        return self._signalled.is_set()

    def stop(self) -> None:
        """Ask a running session to finish (from another thread): it stores the open episode,
        evaluates, checkpoints and returns from ``run``."""
        self._stop.set()

    def _actor_loop(self) -> None:
        cfg = self.config
        env, bridge = self._actor_env()
        loop, self.weights = policy_loop(
            env, self.policy, self.actor_link, self._before_act,
            seed=[cfg.seed, self.counters.env_steps], bridge=bridge,
            after_step=self._after_step, on_episode_end=self._end_episode,
        )  # fmt: skip
        self._rate_mark = (time.monotonic(), self.counters.env_steps)
        self._checkpoint_at = time.monotonic()
        with tqdm(total=cfg.env_steps, initial=self.counters.env_steps, desc="train",
                  unit="step") as self._bar:  # fmt: skip
            loop.run(
                max_steps=cfg.env_steps - self.counters.env_steps,
                should_stop=lambda: self._stop.is_set() or self._signalled.is_set(),
            )

    def _actor_env(self) -> tuple[gym.Env, Any]:
        """The env the actor steps (with its interveners) and the console bridge, if any."""
        cfg = self.config
        cameras = list(cfg.env.cameras) if cfg.env.obs == "pixels" else []
        scripted = ScriptedIntervener(cfg.intervener, cfg.seed) if cfg.interventions else None
        setup = operator_setup(self.env, cfg.console, cfg.teleop, scripted, cameras)
        self.hub, self.console = setup.hub, setup.server
        self._operator = setup
        if setup.bridge is not None:  # an undo of an applied mark relabels the stored episode
            setup.bridge.last_seq = lambda: self.actor_link.next_seq - 1
            setup.bridge.on_undo_mark = self._undo_mark
        return setup.env, setup.bridge

    def _undo_mark(self, mark: AppliedMark) -> None:
        """The operator withdrew a mark the actor applied (the actor thread, between steps): the
        stored episode and its replay copy are relabelled behind the steps, and the training
        success and return follow (the env's verdict: a success ends the episode terminated)."""
        relabel = mark.relabel(ACTOR_ID)
        self.actor_link.relabel(relabel)
        if self.tally.withdraw_mark(relabel.last_seq, mark.before.terminated,
                                    mark.before.reward - mark.marked.reward):  # fmt: skip
            self.core.scalar("actor/success_rate", self.tally.success_rate)
            self.core.scalar("actor/return", self.tally.mean_return)
            self.core.scalar("actor/marks_withdrawn", self.tally.corrections)
            self._show_progress()

    def _before_act(self) -> bool:
        """Hold the update-to-data ratio (before the weight swap); False: stop."""
        if self.config.concurrent:
            self._wait_for_learner()
        else:
            self._learn_once()  # in step: deterministic for a seed
        return self._learner_error is None

    def _after_step(self, step: Transition, info: dict[str, Any]) -> None:
        cfg = self.config
        with self.core.lock:
            self.counters.env_steps += 1
            self.counters.interventions += step.intervened
        steps = self.counters.env_steps
        self._bar.update(1)
        if self.hub is not None and steps % 10 == 0:
            self.hub.update(**self.core.health(), env_steps=steps,
                            weights_version=self.weights.version,
                            weight_age_s=time.monotonic() - self.weights.swapped_at,
                            steps_held=self.actor_link.steps_held,
                            steps_stored=self.actor_link.steps_stored)  # fmt: skip
        if steps % 100 == 0:
            now = time.monotonic()
            last_t, last_steps = self._rate_mark
            self._rate_mark = (now, steps)
            rate = (steps - last_steps) / max(now - last_t, 1e-9)
            self.core.scalar("actor/env_steps_per_s", rate)
            self._show_progress()
        if cfg.eval_every and steps % cfg.eval_every == 0:
            self.evaluate(cfg.eval_episodes)
        by_steps = cfg.checkpoint_every and steps % cfg.checkpoint_every == 0
        by_time = cfg.checkpoint_every_min and (
            time.monotonic() - self._checkpoint_at >= 60 * cfg.checkpoint_every_min
        )
        if by_steps or by_time:
            self.learner_link.poll()  # the steps before it are on disk with it
            self.core.checkpoint()
            self._checkpoint_at = time.monotonic()

    def _show_progress(self) -> None:
        """The bar's figures: the assisted training success (interventions and the operator's
        marks included) over the newest episodes, the latest evaluation, the updates."""
        if self._bar is None:  # before the actor loop starts
            return
        latest = self.evaluations[-1]["success_rate"] if self.evaluations else float("nan")
        self._bar.set_postfix(assisted_success=f"{self.tally.success_rate:.2f}",
                              eval_success=f"{latest:.2f}", upd=self.counters.updates)  # fmt: skip

    def _end_episode(self, info: dict[str, Any], stats: EpisodeStats, finished: bool) -> None:
        if not finished:
            return
        self.counters.episodes += 1
        # Keyed by the seq of the episode's last step, which an undo of its mark names.
        self.tally.add(self.actor_link.next_seq - 1, episode_success(info), stats.episode_return,
                       stats.intervention_rate)  # fmt: skip
        self.core.scalar("actor/success_rate", self.tally.success_rate)
        self.core.scalar("actor/return", self.tally.mean_return)
        self.core.scalar("actor/intervention_rate", self.tally.intervention_rate)
        self.core.scalar("actor/episode_steps", stats.steps)

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
        apply_thread_budget("learner", self.threads)
        try:
            while not self._stop.is_set():
                if not self._learn_once():
                    time.sleep(0.002)  # never run ahead of the data
        except BaseException as exc:  # surfaced by run(); the actor stops waiting on it
            log.exception("learner failed")
            self._learner_error = exc

    def _learn_once(self) -> bool:
        """The actor's newest steps into replay and the episode store, then one learner step."""
        self.learner_link.poll()
        return self.core.learn_once()

    # -- evaluation, checkpoints, plots --------------------------------------------------------
    def evaluate(self, episodes: int) -> dict[str, float]:
        """Deterministic policy on ``episodes`` seeded episodes of the eval env."""
        with self.core.agent_lock:
            policy = copy.deepcopy(self.agent)
        result = evaluate_policy(policy, self.eval_env, episodes, seed=self.config.seed + 50_000)
        result["env_steps"] = float(self.counters.env_steps)
        self.evaluations.append(result)
        self.core.scalar("eval/success_rate", result["success_rate"])
        self.core.scalar("eval/return", result["return"])
        with (self.dir / "eval.jsonl").open("a") as fh:
            fh.write(json.dumps(result) + "\n")
        log.info("eval at %d steps: %s", self.counters.env_steps, result)
        return result

    def _final_evaluation(self) -> dict[str, float]:
        """The evaluation at the last step: the periodic one if it ran there; after a signal,
        the latest there is (a stop should not wait for ten episodes)."""
        latest = self.evaluations[-1] if self.evaluations else None
        if latest is not None and (
            self.interrupted or latest["env_steps"] == self.counters.env_steps
        ):
            return latest
        if self.interrupted:
            return {}
        return self.evaluate(self.config.eval_episodes)

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


def evaluate_policy(agent: Any, env: gym.Env, episodes: int, seed: int) -> dict[str, float]:
    """Success rate and mean return of the deterministic policy (``act(obs, deterministic)``,
    an agent or a ``Policy``) over seeded episodes."""
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
    """The config a run was started with (its config.yaml), pointed at where the run is now
    (``run_dir``), so a moved or copied run resumes in its new place."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {run_dir} is not a training run directory (or never started)"
        )
    config = from_dict(TrainConfig, yaml.safe_load(path.read_text()))
    return dataclasses.replace(config, run_dir=str(Path(run_dir).parent), name=Path(run_dir).name)


def resume_config(run_dir: Path, env_steps: int | None = None) -> TrainConfig:
    """The config to resume a run with: its own (``load_train_config``), with a new step budget
    if given (the only field a resume may change)."""
    config = load_train_config(run_dir)
    return dataclasses.replace(config, env_steps=env_steps) if env_steps else config
