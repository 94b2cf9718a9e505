"""`robot-rl bench learner`: the cost of one learner step and of one stored transition.

update_ms_p50: one ``SACAgent.update`` (``utd_ratio`` = 2 critic updates of ``batch_size`` samples
each, then one actor and temperature update) with two 128x128 cameras and a 21-dim state, on the
CPU with 2 threads (or on CUDA when ``device="cuda"``), default conv encoder, median over runs after
warm-up; update_ms_min the fastest run.
update_ms_p50_previous_default: the same update as the previous default ran it, before issue
15's CPU speed-ups (``SACAgent.fast_update_paths = False``: augmentation by one gather, then the
images converted to float in a fresh tensor, next_obs once per encoder; ``ConvBackbone.fuse_relu``
and ``SpatialLearnedEmbedding.keep_grad_layout`` False: separate ReLU passes, the embedding's
gradient handed back transposed; and Adam's per-tensor loop instead of the fused kernel),
same config, same batches, interleaved with the current one in the same process (alternating
which goes first); update_ratio_vs_previous_default is their ratio (< 1: faster now). Both
agents start from the same weights; their updates agree to float rounding.
update_ms_p50_no_target_encoder: the current update with ``target_encoder: false`` (DrQ-v2's
choice, opt-in: a change of the algorithm), same batches, for the record of what that pass costs;
update_ratio_no_target_encoder is its ratio to update_ms_p50.
update_ms_p50_lean_conv: the current update with the opt-in ``conv_preset: lean`` (the conv
backbone's last 3x3 conv strided too: (32, 8, 8) feature maps instead of (32, 16, 16)), same
batches, in the same rotation; update_ratio_lean_conv is its ratio to update_ms_p50. Another
network whose learning is unmeasured, so not the default.
torch_threads: the threads the updates ran with. threads_cpus / threads_learner / threads_actor:
the thread budget (``robot_rl.agents.threads``) this machine gets in training.
load_avg_1min: the machine's 1-minute load average at the end of the run (os.getloadavg; -1 where
unknown): above ``torch_threads`` the absolute times are inflated, the same-run ratios less so.
update_ms_p50_frozen_resnet10_cached: the same update shape with a frozen "pretrained" ResNet-10
(``freeze_encoder: true``, the default ``feature_cache: float16``) on cached feature maps, the
cache warm (steady state: every sampled frame encoded already); it trains the spatial-embedding
heads, MLPs and temperature. The "pretrained" weights are random ones saved to a temporary file:
speed does not depend on the weight values. Its updates alternate with the current conv agent's
(same process, which goes first alternating): update_ms_p50_conv_beside_frozen is that conv
update's median, update_ratio_frozen_resnet10_cached = frozen / conv. The *_cpu_ms figures are
process CPU time (all threads) of the same calls: on a loaded machine the wall times grow with
the load, CPU time much less. sample_ms_p50_frozen_resnet10_cached: drawing such a batch (maps,
not images). frozen_resnet10_encode_ms_per_frame: the one-time cost of a stored frame, both
cameras through the frozen backbones (``ReplayBuffer.fill_feature_cache`` over the buffer's
frames, divided by their number): what each env step adds to the learner's work, amortized;
frozen_resnet10_encode_ratio_vs_update: its ratio to update_ms_p50_conv_beside_frozen.
frozen_resnet10_encodes_while_sampling: frames encoded again while sampling the warm cache (0:
each frame was encoded once). feature_cache_bytes_per_frame: the cache's bytes per stored frame
(two cameras of 512x4x4 float16 maps plus an 8-byte stamp), feature_cache_bytes_ratio_vs_images
its ratio to the frame's uint8 images, which the buffer keeps as well.
replay_bytes_per_transition: bytes the replay buffer holds per step for 200-step episodes with
two 128x128 cameras (the floor is 2 x 128 x 128 x 3 = 98 304 bytes).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from robot_rl.agents.config import SACConfig
from robot_rl.agents.encoders import ResNet10Backbone, save_backbone_weights
from robot_rl.agents.frozen_features import FrozenBackbones
from robot_rl.agents.sac import SACAgent
from robot_rl.agents.threads import thread_budget
from robot_rl.data.batch import Transition
from robot_rl.data.feature_cache import FeatureCache
from robot_rl.data.replay import ReplayBuffer, bytes_per_transition

CAMERAS = ("front", "wrist")


def _spaces(size: int, state_dim: int, action_dim: int) -> tuple[gym.spaces.Dict, gym.spaces.Box]:
    obs = {name: gym.spaces.Box(0, 255, (size, size, 3), np.uint8) for name in CAMERAS}
    obs["state"] = gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)
    return gym.spaces.Dict(obs), gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)


def _fill(buffer: ReplayBuffer, rng: np.random.Generator, steps: int, episode_len: int,
          size: int, state_dim: int, action_dim: int) -> None:  # fmt: skip
    def obs() -> dict[str, np.ndarray]:
        o = {n: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for n in CAMERAS}
        o["state"] = rng.standard_normal(state_dim).astype(np.float32)
        return o

    current = obs()
    for step in range(steps):
        nxt = obs()
        last = (step + 1) % episode_len == 0
        action = rng.uniform(-1, 1, action_dim).astype(np.float32)
        buffer.add(Transition(current, action, 0.0, nxt, False, last, bool(step % 7 == 0)))
        current = obs() if last else nxt


def run_learner_bench(
    seed: int = 0, quick: bool = False, device: str = "cpu", threads: int = 2
) -> dict[str, float]:
    """Measure (see module docstring); ``quick`` shrinks the run for tests."""
    torch.set_num_threads(threads)
    size, state_dim, action_dim, batch_size, utd = 128, 21, 4, 256, 2
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(capacity=100_000, gamma=0.97, seed=seed)
    steps = 400 if quick else 2_000
    _fill(buffer, rng, steps, 200, size, state_dim, action_dim)
    bytes_per_step = bytes_per_transition(buffer)

    sample_times = []
    for _ in range(5 if quick else 20):
        start = time.perf_counter()
        batch = buffer.sample(batch_size * utd, minibatches=utd)
        sample_times.append(time.perf_counter() - start)

    obs_space, act_space = _spaces(size, state_dim, action_dim)
    config = SACConfig(utd_ratio=utd, device=device)
    agent = SACAgent(obs_space, act_space, config, seed)
    previous = _previous_default(SACAgent(obs_space, act_space, config, seed))
    no_target = SACAgent(
        obs_space, act_space, dataclasses.replace(config, target_encoder=False), seed
    )
    lean = SACAgent(obs_space, act_space, dataclasses.replace(config, conv_preset="lean"), seed)
    warmup, runs = (1, 2) if quick else (2, 7)
    learners = [("current", agent), ("previous", previous), ("no_target", no_target)]
    learners.append(("lean", lean))
    times: dict[str, list[float]] = {name: [] for name, _ in learners}
    for i in range(warmup + runs):
        batch = buffer.sample(batch_size * utd, minibatches=utd)
        # Rotate which goes first, so none always meets a warmer cache.
        turn = i % len(learners)
        for name, learner in learners[turn:] + learners[:turn]:
            elapsed = _timed_update(learner, batch)
            if i >= warmup:
                times[name].append(elapsed)
    budget = thread_budget()
    current, prev, no_tgt = (
        float(np.median(times[k])) for k in ("current", "previous", "no_target")
    )
    frozen = _frozen_resnet10_cached(seed, quick, device, agent, buffer)
    return {
        "update_ms_p50": current * 1e3,
        "update_ms_min": float(np.min(times["current"]) * 1e3),
        "update_ms_p50_previous_default": prev * 1e3,
        "update_ratio_vs_previous_default": current / prev,
        "update_ms_p50_no_target_encoder": no_tgt * 1e3,
        "update_ratio_no_target_encoder": no_tgt / current,
        **frozen,
        "replay_bytes_per_transition": float(bytes_per_step),
        "replay_bytes_floor": float(len(CAMERAS) * size * size * 3),
        "replay_bytes_ratio": float(bytes_per_step / (len(CAMERAS) * size * size * 3)),
        "sample_ms_p50": float(np.median(sample_times) * 1e3),
        "batch_size": float(batch_size),
        "utd_ratio": float(utd),
        "update_ms_p50_lean_conv": float(np.median(times["lean"])) * 1e3,
        "update_ratio_lean_conv": float(np.median(times["lean"])) / current,
        "torch_threads": float(torch.get_num_threads()),
        "threads_cpus": float(budget.cpus),
        "threads_learner": float(budget.learner),
        "threads_actor": float(budget.actor),
        "load_avg_1min": _load_average(),
        "device": 1.0 if agent.device.type == "cuda" else 0.0,
        "seed": float(seed),
    }


def _frozen_resnet10_cached(
    seed: int, quick: bool, device: str, conv_agent: SACAgent, conv_buffer: ReplayBuffer
) -> dict[str, float]:
    """The frozen-ResNet-10 figures of the module docstring, at ``run_learner_bench``'s shape,
    its updates alternating with ``conv_agent``'s on batches of ``conv_buffer``."""
    size, state_dim, action_dim, batch_size, utd = 128, 21, 4, 256, 2
    buffer = ReplayBuffer(capacity=100_000, gamma=0.97, seed=seed)
    _fill(buffer, np.random.default_rng(seed + 1), 40 if quick else 400, 200, size, state_dim,
          action_dim)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet10.pt"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            save_backbone_weights(ResNet10Backbone(), path)  # random: speed is the same
        config = SACConfig(utd_ratio=utd, device=device, encoder="resnet10",
                           pretrained_encoder_path=str(path), freeze_encoder=True)  # fmt: skip
        agent = SACAgent(*_spaces(size, state_dim, action_dim), config, seed)
    cache = FeatureCache(FrozenBackbones(agent.encoder, agent.spec.image_shapes, agent.device),
                         config.feature_cache)  # fmt: skip
    buffer.attach_feature_cache(cache)
    start_s, start_cpu_s = time.perf_counter(), time.process_time()
    frames = buffer.fill_feature_cache()
    encode_ms = (time.perf_counter() - start_s) * 1e3 / frames
    encode_cpu_ms = (time.process_time() - start_cpu_s) * 1e3 / frames
    warmup, runs = (1, 2) if quick else (2, 7)
    times: dict[str, list[tuple[float, float]]] = {"frozen": [], "conv": []}
    sample_times = []
    for i in range(warmup + runs):
        start_s = time.perf_counter()
        batch = buffer.sample(batch_size * utd, minibatches=utd)
        sampled = time.perf_counter() - start_s
        pairs = [
            ("frozen", agent, batch),
            ("conv", conv_agent, conv_buffer.sample(batch_size * utd, minibatches=utd)),
        ]
        for name, learner, learner_batch in pairs[i % 2 :] + pairs[: i % 2]:
            start_cpu_s = time.process_time()
            elapsed = _timed_update(learner, learner_batch)
            if i >= warmup:
                times[name].append((elapsed, time.process_time() - start_cpu_s))
        if i >= warmup:
            sample_times.append(sampled)
    frozen_ms, frozen_cpu_ms = (float(x) * 1e3 for x in np.median(times["frozen"], axis=0))
    conv_ms, conv_cpu_ms = (float(x) * 1e3 for x in np.median(times["conv"], axis=0))
    return {
        "update_ms_p50_frozen_resnet10_cached": frozen_ms,
        "update_ms_p50_conv_beside_frozen": conv_ms,
        "update_ratio_frozen_resnet10_cached": frozen_ms / conv_ms,
        "update_cpu_ms_p50_frozen_resnet10_cached": frozen_cpu_ms,
        "update_cpu_ms_p50_conv_beside_frozen": conv_cpu_ms,
        "sample_ms_p50_frozen_resnet10_cached": float(np.median(sample_times)) * 1e3,
        "frozen_resnet10_encode_ms_per_frame": encode_ms,
        "frozen_resnet10_encode_cpu_ms_per_frame": encode_cpu_ms,
        "frozen_resnet10_encode_ratio_vs_update": encode_ms / conv_ms,
        "frozen_resnet10_frames_encoded": float(frames),
        "frozen_resnet10_encodes_while_sampling": float(cache.frames_encoded - frames),
        "feature_cache_bytes_per_frame": float(cache.bytes_per_frame),
        "feature_cache_bytes_ratio_vs_images": cache.bytes_per_frame / (len(CAMERAS) * size**2 * 3),
    }


def _previous_default(agent: SACAgent) -> SACAgent:
    """``agent`` set to update as the previous default did (see the module docstring)."""
    agent.fast_update_paths = False
    for encoder in (agent.encoder, agent.target_encoder):
        for camera in encoder.cameras.values():
            camera.backbone.fuse_relu = False  # a plain attribute where not a ConvBackbone
            camera.spatial.keep_grad_layout = False
    for optimizer in agent._optimizers().values():  # the bench's peer
        for group in optimizer.param_groups:
            group["fused"] = None  # Adam reads it at every step: back to the per-tensor loop
    return agent


def _load_average() -> float:
    """The 1-minute load average, or -1.0 where the platform has none."""
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return -1.0


def _timed_update(agent: SACAgent, batch: object) -> float:
    """Seconds of one ``agent.update(batch)`` (CUDA work included)."""
    if agent.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    agent.update(batch)  # type: ignore[arg-type]
    if agent.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start
