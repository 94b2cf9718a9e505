"""The one actor loop: reset -> act -> step -> record -> end of episode.

Every place that drives an arm episode by episode is a configuration of ``ActorLoop``:

- ``robot-rl train`` (in-process link) and ``robot-rl actor`` (ZMQ link): a ``Policy`` acts, an
  intervener may take over inside the env, each step goes to a ``LinkRecorder``; new weights are
  swapped in at a step boundary (``WeightSwap``), never mid-step;
- teleop demos (``runtime.record``) and labelled frames (``rewards.dataset.collect_teleop``): the
  operator's device acts (``operator_drives``), each step goes to an episode or frame recorder;
- the console benchmark: a resting policy, nothing recorded.

Around each step: the console's controls first (``ConsoleBridge.before_step``: pause, stop,
reset, take-over, marks), then ``before_act`` (weight swaps, the in-process learner's pacing),
then the action and the env step. An operator's mark (``StepRequest.label``) is applied to the
step: "success" makes it terminal with reward 1, "failure" ends it truncated with reward 0.
Pacing is one helper, ``Pacer``: monotonic deadlines, one policy period apart.

Each step is checked once, here (``check_step``): finite, and shaped as the env's spaces say; the
link, the episode store and the replay take it as it is.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from robot_rl.agents.config import SACConfig
from robot_rl.agents.encoders import build_observation_encoder
from robot_rl.agents.gripper import GripperCritic, gripper_index_to_value
from robot_rl.agents.networks import TanhGaussianActor
from robot_rl.agents.spaces import SpaceError, check_spaces
from robot_rl.data.batch import STATE_KEY, Transition
from robot_rl.data.episode_labels import StepFlags
from robot_rl.runtime.signals import handle_stop_signals

log = logging.getLogger(__name__)

Obs = dict[str, np.ndarray]


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event, what: str) -> Iterator[None]:
    """While inside: SIGINT and SIGTERM set ``stop`` (a loop watching it finishes at a step
    boundary and saves); a second signal raises KeyboardInterrupt. Main thread only."""

    def finish(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.warning("%s: %s finishes at the next step and saves; again to abort",
                    signal.Signals(signum).name, what)  # fmt: skip
        stop.set()

    with handle_stop_signals(finish):
        yield


class Pacer:
    """Monotonic deadlines ``period_s`` apart: ``wait()`` sleeps until the next one. A loop that
    falls more than a period behind starts a fresh schedule from now instead of rushing."""

    def __init__(
        self,
        period_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s={period_s}; must be > 0")
        self.period_s, self.clock, self.sleep = period_s, clock, sleep
        self._deadline: float | None = None

    def restart(self) -> None:
        """The next ``wait`` returns one period from its call (after a reset or a pause)."""
        self._deadline = None

    def wait(self) -> None:
        now = self.clock()
        if self._deadline is None or now - self._deadline > self.period_s:
            self._deadline = now
        self._deadline += self.period_s
        self.sleep(max(0.0, self._deadline - now))


class Policy:
    """What an actor needs of an agent: the encoder, the actor head and the gripper head (no
    critics, targets or optimizers). Built from the agent config; loads the weights a learner
    publishes (``SACAgent.policy_state_dict``) and acts as ``SACAgent.act`` does, drawing its
    exploration noise from its own generator (seeded ``seed + 1``, as the agent's)."""

    def __init__(
        self, observation_space: gym.spaces.Dict, action_space: gym.spaces.Box,
        config: SACConfig, seed: int,
    ) -> None:  # fmt: skip
        spec = check_spaces(observation_space, action_space, config.encoder, config.hybrid_gripper)
        self.config, self.spec, self.device = config, spec, config.resolved_device()
        action_dim = self.spec.continuous_action_dim(config.hybrid_gripper)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = build_observation_encoder(self.spec, config)
            self.actor = TanhGaussianActor(self.encoder.out_dim, action_dim, config.hidden_dims)
            self.gripper_critic = (
                GripperCritic(self.encoder.out_dim, config.hidden_dims)
                if config.hybrid_gripper
                else None
            )
        for module in self._modules().values():
            module.to(self.device).eval()
        use_amp = self.device.type == "cuda" and config.amp and torch.cuda.is_bf16_supported()
        self._amp_dtype = torch.bfloat16 if use_amp else None
        self.generator = torch.Generator(self.device).manual_seed(seed + 1)

    def _modules(self) -> dict[str, torch.nn.Module]:
        named = {"encoder": self.encoder, "actor": self.actor}
        named["gripper_critic"] = self.gripper_critic
        return {name: module for name, module in named.items() if module is not None}

    def policy_state_dict(self) -> dict[str, Any]:
        """The weights, laid out as ``SACAgent.policy_state_dict``."""
        return {name: module.state_dict() for name, module in self._modules().items()}

    def load_policy_state_dict(self, state: dict[str, Any]) -> None:
        """Weights from ``SACAgent.policy_state_dict`` (or a learner's publication)."""
        for name, module in self._modules().items():
            module.load_state_dict(state[name])

    @torch.no_grad()
    def act(self, obs: Obs, deterministic: bool) -> np.ndarray:
        """Action (A,) float32 in [-1, 1] for one observation (see ``SACAgent.act``)."""
        expected = {**self.spec.image_shapes, STATE_KEY: (self.spec.state_dim,)}
        if set(obs) != set(expected):
            raise SpaceError(f"observation keys {sorted(obs)}; expected {sorted(expected)}")
        batch = {k: torch.tensor(np.asarray(obs[k]), device=self.device)[None] for k in expected}
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=self._amp_dtype)
            if self._amp_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            features = self.encoder(batch)
            if deterministic:  # the squashed mean; else a sample from the policy's own stream
                actions = self.actor.deterministic(features).float()
            else:
                actions = self.actor.sample(features, self.generator)[0].float()
            if self.gripper_critic is not None:  # the greedy gripper index, as -1, 0 or +1
                index = self.gripper_critic(features).argmax(dim=-1)
                actions = torch.cat([actions, gripper_index_to_value(index)[:, None]], dim=-1)
        return actions[0].float().cpu().numpy()


class WeightSource(Protocol):
    """Where an actor's new weights come from (``ActorLink`` or ``InProcessActorLink``)."""

    def expect_weights(self, state_dict: dict[str, Any]) -> None: ...

    def latest_weights(self) -> tuple[int, dict[str, Any]] | None: ...


class WeightSwap:
    """Loads the newest published weights into a policy; called between steps. The source
    refuses weights laid out otherwise than the policy's (logged and counted by the link)."""

    def __init__(self, source: WeightSource, policy: Policy) -> None:
        self.source, self.policy = source, policy
        source.expect_weights(policy.policy_state_dict())
        self.version = -1
        self.swapped_at = time.monotonic()

    def __call__(self) -> bool:
        weights = self.source.latest_weights()
        if weights is not None:
            self.policy.load_policy_state_dict(weights[1])
            self.version, self.swapped_at = weights[0], time.monotonic()
        return True


def check_step(step: Transition, observation_space: gym.spaces.Dict, action_dim: int) -> None:
    """The one check of a step: both observations keyed and shaped as the space says, state and
    reward finite, the action (A,) finite. ValueError naming the field otherwise."""
    for name, obs in (("obs", step.obs), ("next_obs", step.next_obs)):
        if set(obs) != set(observation_space.spaces):
            raise ValueError(f"step.{name} keys {sorted(obs)}; the env's are "
                             f"{sorted(observation_space.spaces)}")  # fmt: skip
        for key, space in observation_space.spaces.items():
            value = obs[key]
            if value.shape != space.shape or value.dtype != space.dtype:
                raise ValueError(f"step.{name}[{key!r}] is {value.dtype} {value.shape}; "
                                 f"the env's space is {space.dtype} {space.shape}")  # fmt: skip
        if not np.isfinite(obs[STATE_KEY]).all():
            raise ValueError(f"step.{name}['state'] is not finite: {obs[STATE_KEY].tolist()}")
    if step.action.shape != (action_dim,) or not np.isfinite(step.action).all():
        raise ValueError(f"step.action {step.action.tolist()}; need {action_dim} finite values")
    if not math.isfinite(step.reward):
        raise ValueError(f"step.reward {step.reward} is not finite")


def apply_label(
    label: str | None, reward: float, terminated: bool, truncated: bool, info: dict[str, Any]
) -> tuple[float, bool, bool]:
    """An operator's mark on a step: "success" makes it terminal with reward 1; "failure" ends
    the episode, truncated, with reward 0 (the operator's word wins over a detector's false
    positive too). Records the mark as ``info["operator_label"]``, and the step's flags without
    and with it as ``info["label_before"]`` and ``info["label_after"]`` (``StepFlags``: an undo
    of the mark relabels the stored step, ``data.episode_labels``)."""
    if label is None:
        return reward, terminated, truncated
    info["operator_label"] = label
    info["label_before"] = StepFlags(float(reward), bool(terminated), bool(truncated))
    flags = (1.0, True, False) if label == "success" else (0.0, False, True)
    info["label_after"] = StepFlags(*flags)
    return flags


@dataclass
class EpisodeStats:
    """The running episode: steps, return, steps the operator (or intervener) drove."""

    steps: int = 0
    episode_return: float = 0.0
    interventions: int = 0

    @property
    def intervention_rate(self) -> float:
        return self.interventions / max(1, self.steps)


class Recorder(Protocol):
    """Where an actor's steps go (a link, an episode file, a frame dataset)."""

    def add(self, step: Transition, info: dict[str, Any]) -> bool:
        """Take one checked step; True ends the episode here."""
        ...

    def end_episode(self, info: dict[str, Any], stats: EpisodeStats, finished: bool) -> None:
        """The episode is over: ``finished`` by the env, a mark or the recorder, or cut short
        (the operator's reset, the loop stopping)."""
        ...


class ActorLink(Protocol):
    """The actor's end of a link (``ActorLink`` over ZMQ, ``InProcessActorLink``)."""

    def add(self, step: Transition) -> None: ...

    def end_episode(self) -> None: ...


class LinkRecorder:
    """Every step into an actor link; an episode cut short is closed (stored unfinished)."""

    def __init__(self, link: ActorLink) -> None:
        self.link = link

    def add(self, step: Transition, info: dict[str, Any]) -> bool:
        self.link.add(step)
        return False

    def end_episode(self, info: dict[str, Any], stats: EpisodeStats, finished: bool) -> None:
        if not finished:
            self.link.end_episode()


class NoRecorder:
    """Records nothing (a benchmark's resting actor)."""

    def add(self, step: Transition, info: dict[str, Any]) -> bool:
        return False

    def end_episode(self, info: dict[str, Any], stats: EpisodeStats, finished: bool) -> None:
        """Nothing kept."""


class PolicyLink(ActorLink, WeightSource, Protocol):
    """An actor link as a policy's actor uses it: steps out, weights in."""


def policy_loop(
    env: gym.Env,
    policy: Policy,
    link: PolicyLink,
    before_act: Callable[[], bool] | None = None,
    **loop: Any,
) -> tuple[ActorLoop, WeightSwap]:
    """The learning actor's configuration: the policy explores, every step goes to the link,
    the newest weights are swapped in before each step (after ``before_act``). ``loop``: the
    other ``ActorLoop`` arguments."""
    swap = WeightSwap(link, policy)

    def before() -> bool:
        return (before_act is None or before_act()) and swap()

    act = lambda obs: policy.act(obs, deterministic=False)  # noqa: E731
    return ActorLoop(env, act, LinkRecorder(link), before_act=before, **loop), swap


class Bridge(Protocol):
    """The console side of the loop (``robot_rl.console.bridge.ConsoleBridge``)."""

    def before_step(
        self, wait_s: float = 0.1, should_stop: Callable[[], bool] | None = None
    ) -> Any: ...

    def start_episode(self) -> None: ...

    def after_step(self, obs: Obs, policy_action: np.ndarray, info: dict[str, Any],
                   episode_return: float) -> None: ...  # fmt: skip

    def end_episode(self, info: dict[str, Any], episode_return: float, interventions: int,
                    steps: int) -> bool: ...  # fmt: skip


class ActorLoop:
    """See the module docstring.

    env: a gymnasium env (wrapped with its interveners); act: observation -> action (A,);
    recorder: where steps go; bridge: the console, if any; pacer: steps one period apart (a
    person driving the fast twin), None for as fast as the env goes; before_act: called before
    each action (weight swaps, the learner's pacing), False stops the loop; after_step(step,
    info): bookkeeping after each step (after its episode's end, if it ended one);
    on_episode_end(info, stats, finished): after each finished or cut episode.
    ``operator_drives``: ``act`` is the operator's device, each step is flagged intervened.
    ``recorder_ends``: only the recorder (and the time limit) ends an episode; marks are passed
    on in ``info["operator_label"]`` without changing reward or termination.
    """

    def __init__(
        self,
        env: gym.Env,
        act: Callable[[Obs], np.ndarray],
        recorder: Recorder,
        *,
        seed: int | list[int] = 0,
        bridge: Bridge | None = None,
        pacer: Pacer | None = None,
        before_act: Callable[[], bool] | None = None,
        after_step: Callable[[Transition, dict[str, Any]], None] | None = None,
        on_episode_end: Callable[[dict[str, Any], EpisodeStats, bool], None] | None = None,
        operator_drives: bool = False,
        recorder_ends: bool = False,
        max_episode_steps: int | None = None,
    ) -> None:
        self.env, self.act, self.recorder = env, act, recorder
        self.bridge, self.pacer, self.before_act = bridge, pacer, before_act
        self.after_step, self.on_episode_end = after_step, on_episode_end
        self.operator_drives, self.recorder_ends = operator_drives, recorder_ends
        self.max_episode_steps = max_episode_steps
        self.rng = np.random.default_rng(seed)
        self.action_dim = int(env.action_space.shape[0])
        self.stats = EpisodeStats()
        self.steps = 0
        self.episodes = 0
        self._obs: Obs | None = None

    def reset(self) -> Obs:
        """Start a new episode (seeded from the loop's generator)."""
        self._obs, _ = self.env.reset(seed=int(self.rng.integers(2**31 - 1)))
        self.stats = EpisodeStats()
        if self.bridge is not None:
            self.bridge.start_episode()
        if self.pacer is not None:
            self.pacer.restart()
        return self._obs

    def end_episode(self, info: dict[str, Any], finished: bool) -> None:
        """Close the running episode (``finished``: it ended; else it was cut short)."""
        self.recorder.end_episode(info, self.stats, finished)
        if finished:
            self.episodes += 1
        if self.on_episode_end is not None:
            self.on_episode_end(info, self.stats, finished)
        self._obs = None

    def run(
        self,
        max_steps: int | None = None,
        max_episodes: int | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> int:
        """Step until ``max_steps`` steps or ``max_episodes`` episodes were taken in this call, or
        ``should_stop``; an episode left open stays open for the next call (``close``). Returns
        the steps taken."""
        start_steps, start_episodes = self.steps, self.episodes
        while not should_stop():
            if max_steps is not None and self.steps - start_steps >= max_steps:
                break
            if max_episodes is not None and self.episodes - start_episodes >= max_episodes:
                break
            if self._obs is None:
                self.reset()
            request = self.bridge.before_step(should_stop=should_stop) if self.bridge else None
            if should_stop():  # asked to finish while paused or stopped
                break
            if request is not None and request.reset:  # the operator restarts the episode
                self.end_episode({}, finished=False)
                continue
            if self.before_act is not None and not self.before_act():
                break
            self._step(request.label if request is not None else None)
            if self.pacer is not None and self._obs is not None:
                self.pacer.wait()
        return self.steps - start_steps

    def close(self) -> None:
        """Close an episode left open by ``run`` (stored as cut short)."""
        if self._obs is not None:
            self.end_episode({}, finished=False)

    def _step(self, label: str | None) -> None:
        obs = self._obs
        assert obs is not None  # run() resets first
        action = np.asarray(self.act(obs), dtype=np.float32)
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        info.setdefault("policy_action", action)
        if self.operator_drives:
            info.update(intervened=True, action=action)
        if self.recorder_ends:
            if label is not None:
                info["operator_label"] = label
            terminated = False
        else:
            reward, terminated, truncated = apply_label(label, reward, terminated, truncated, info)
        executed = np.asarray(info.get("action", action), dtype=np.float32)
        step = Transition(
            obs, executed, float(reward), next_obs, bool(terminated), bool(truncated),
            bool(info.get("intervened", False)), float(info.get("gripper_penalty", 0.0)),
        )  # fmt: skip
        check_step(step, self.env.observation_space, self.action_dim)
        ends = self.recorder.add(step, info)
        self.steps += 1
        self.stats.steps += 1
        self.stats.episode_return += step.reward
        self.stats.interventions += step.intervened
        self._obs = next_obs
        if self.bridge is not None:
            self.bridge.after_step(next_obs, info["policy_action"], info, self.stats.episode_return)
        limit = self.max_episode_steps is not None and self.stats.steps >= self.max_episode_steps
        if ends or terminated or truncated or limit:
            if self.bridge is not None:
                self.bridge.end_episode(info, self.stats.episode_return, self.stats.interventions,
                                        self.stats.steps)  # fmt: skip
            self.end_episode(info, finished=True)
        if self.after_step is not None:
            self.after_step(step, info)
