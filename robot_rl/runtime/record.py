"""Record demos, each episode to disk: the task's scripted expert (sim), or an operator through
any teleop device (``record_teleop_demos``); and frames labelled by the operator's console marks
for success detectors (``collect_teleop``). Each is the actor loop (``runtime.actor``) with the
expert or the operator's device in the policy's place and its own recorder.

Demos are recorded in the env's own action space (``TwinEnv.expert_action``, or the operator's
twist converted by ``operator_action``), so a demo step is exactly what a policy would have sent.
Only successful episodes are kept: the env's success (the ground truth on the twin, the detector
on a robot), or the operator's mark on the console (success / failure) when there is one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from robot_rl.console.bridge import ConsoleBridge, episode_success
from robot_rl.console.hub import ConsoleHub
from robot_rl.data.batch import Transition
from robot_rl.data.episodes import save_episode
from robot_rl.envs.twin_env import TwinEnv
from robot_rl.rewards.dataset import FrameDataset
from robot_rl.runtime.actor import ActorLoop, EpisodeStats, Pacer
from robot_rl.sim.tasks import Expert
from robot_rl.teleop.intervener import TeleopDevice, operator_action
from robot_rl.teleop_command import TeleopConfig

log = logging.getLogger(__name__)


class DemoRecorder:
    """Holds an episode's steps; at its end saves it to ``out_dir`` when it succeeded (or
    ``keep_failures``). ``kept`` lists the files, ``last`` the last finished episode."""

    def __init__(self, out_dir: Path | None, meta: dict[str, Any], keep_failures: bool = False):
        self.out_dir, self.meta, self.keep_failures = out_dir, meta, keep_failures
        self.steps: list[Transition] = []
        self.kept: list[Path] = []
        self.last: tuple[list[Transition], bool] = ([], False)

    def add(self, step: Transition, info: dict[str, Any]) -> bool:
        self.steps.append(step)
        return False

    def end_episode(self, info: dict[str, Any], stats: EpisodeStats, finished: bool) -> None:
        steps, self.steps = self.steps, []
        if not finished:
            log.info("episode restarted after %d steps; not kept", len(steps))
            return
        success = episode_success(info)
        self.last = (steps, success)
        if not success and not self.keep_failures:
            log.info("episode not successful after %d steps; not kept", len(steps))
            return
        if self.out_dir is not None:
            self.kept.append(save_episode(self.out_dir, steps, {**self.meta, "success": success}))


class ExpertDriver:
    """The task's scripted expert as an actor loop's policy (a fresh expert every episode)."""

    def __init__(self, env: TwinEnv) -> None:
        self.env = env
        self.expert: Expert | None = None

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        if self.expert is None:
            self.expert = self.env.task.expert()
        return self.env.expert_action(self.expert.act(self.env.scene.twin))

    def new_episode(self, info: dict[str, Any], stats: EpisodeStats, finished: bool) -> None:
        self.expert = None


def _expert_loop(env: TwinEnv, recorder: DemoRecorder, seed: int) -> ActorLoop:
    driver = ExpertDriver(env)
    return ActorLoop(env, driver, recorder, seed=seed, operator_drives=True,
                     on_episode_end=driver.new_episode)  # fmt: skip


def record_expert_episode(env: TwinEnv, seed: int = 0) -> tuple[list[Transition], bool]:
    """One episode of the scripted expert; returns its transitions and whether it succeeded."""
    recorder = DemoRecorder(None, {}, keep_failures=True)
    _expert_loop(env, recorder, seed).run(max_episodes=1)
    return recorder.last


def record_demos(
    env: TwinEnv, episodes: int, out_dir: Path, seed: int = 0, keep_failures: bool = False
) -> list[Path]:
    """Record ``episodes`` successful expert episodes into ``out_dir``; returns the files.

    Failed expert episodes are skipped (logged) unless ``keep_failures``; gives up with a
    RuntimeError after ``2 * episodes + 5`` attempts.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"task": env.task.name, "source": "scripted_expert"}
    recorder = DemoRecorder(out_dir, meta, keep_failures)
    loop = _expert_loop(env, recorder, seed)
    with tqdm(total=episodes, desc=f"recording {env.task.name} demos", unit="ep") as bar:
        while len(recorder.kept) < episodes:
            if loop.episodes >= 2 * episodes + 5:
                raise RuntimeError(
                    f"the {env.task.name} expert failed {loop.episodes - len(recorder.kept)} of "
                    f"{loop.episodes} episodes; check the task and the controller"
                )
            loop.run(max_episodes=1)
            bar.update(len(recorder.kept) - bar.n)
    return recorder.kept


def record_teleop_demos(
    env: Any,
    device: TeleopDevice,
    teleop: TeleopConfig,
    episodes: int,
    out_dir: Path,
    seed: int = 0,
    hub: ConsoleHub | None = None,
    pace: bool = True,
    max_attempts: int | None = None,
) -> list[Path]:
    """Record ``episodes`` successful operator-driven episodes (see the module docstring).

    ``device`` gives ``TeleopCommand``s (SpaceMouse, gamepad, the console page); with ``hub`` the
    console's marks, reset, pause and stop apply. ``pace`` runs steps at the env's policy period,
    so a person can drive the twin (which would otherwise run faster than real time).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    base = env.unwrapped
    recorder = DemoRecorder(out_dir, {"task": base.config.task, "source": "teleop"})
    bridge = ConsoleBridge(hub, env, None) if hub is not None else None
    loop = ActorLoop(
        env, lambda obs: operator_action(env, device.read(), teleop), recorder, seed=seed,
        bridge=bridge, pacer=Pacer(base.config.policy_period_s) if pace else None,
        operator_drives=True,
    )  # fmt: skip
    attempts = 0
    while len(recorder.kept) < episodes:
        if max_attempts is not None and attempts >= max_attempts:
            log.warning("stopped after %d attempts, %d demos kept", attempts, len(recorder.kept))
            break
        attempts += 1
        kept = len(recorder.kept)
        loop.run(max_episodes=1)
        if len(recorder.kept) > kept:
            log.info("demo %d of %d kept (%d steps)", len(recorder.kept), episodes,
                     len(recorder.last[0]))  # fmt: skip
    return recorder.kept


class FrameRecorder:
    """Frames labelled by the operator's marks: negative until "success" (y), then positive for
    ``hold_steps`` more frames, which end the episode; "failure" (n) ends it, that step's frame
    not kept. One entry per step: the frames the operator saw before acting."""

    def __init__(self, cameras: list[str], hold_steps: int) -> None:
        self.cameras, self.hold_steps = cameras, hold_steps
        self.frames: dict[str, list[np.ndarray]] = {c: [] for c in cameras}
        self.labels: list[bool] = []
        self.episode_ids: list[int] = []
        self.step_ids: list[int] = []
        self.episode, self.step = 0, 0
        self.success_since: int | None = None

    def add(self, step: Transition, info: dict[str, Any]) -> bool:
        label = info.get("operator_label")
        if label == "failure":
            return True
        if label == "success" and self.success_since is None:
            self.success_since = self.step
        for camera in self.cameras:
            self.frames[camera].append(step.obs[camera])
        self.labels.append(self.success_since is not None)
        self.episode_ids.append(self.episode)
        self.step_ids.append(self.step)
        self.step += 1
        since = self.success_since
        held = since is not None and self.step - 1 - since >= self.hold_steps
        if held:
            info["operator_label"] = "success"  # the console counts the episode as marked
        return held

    def end_episode(self, info: dict[str, Any], stats: EpisodeStats, finished: bool) -> None:
        self.episode += 1
        self.step, self.success_since = 0, None


def collect_teleop(
    env: Any,
    device: TeleopDevice,
    teleop: TeleopConfig,
    hub: ConsoleHub,
    episodes: int,
    hold_steps: int = 10,
    seed: int = 0,
    pace: bool = True,
) -> FrameDataset:
    """Frames of ``episodes`` operator-driven episodes labelled by the operator's marks (see
    ``FrameRecorder``), for training a success detector on a robot. ``env`` gives pixel
    observations (the twin, or a robot with camera streams). The marks, not the env's success,
    decide labels and episode ends (the time limit ends one too)."""
    config = env.unwrapped.config
    if config.obs != "pixels":
        raise ValueError("labelling frames needs pixel observations: set env.obs to pixels")
    cameras = list(config.cameras)
    recorder = FrameRecorder(cameras, hold_steps)
    loop = ActorLoop(
        env, lambda obs: operator_action(env, device.read(), teleop), recorder, seed=seed,
        bridge=ConsoleBridge(hub, env, None),
        pacer=Pacer(config.policy_period_s) if pace else None, operator_drives=True,
        recorder_ends=True,
    )  # fmt: skip
    loop.run(max_episodes=episodes)
    if not recorder.labels:
        raise ValueError("no frames were collected")
    return FrameDataset(
        {c: np.stack(f) for c, f in recorder.frames.items()}, np.array(recorder.labels, bool),
        np.array(recorder.episode_ids, np.int64), np.array(recorder.step_ids, np.int64),
        {"task": config.task, "cameras": cameras, "source": "operator marks"},
    )  # fmt: skip
