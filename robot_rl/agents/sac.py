"""SERL-style off-policy learner: SAC with a critic ensemble, high UTD and DrQ, on pixels + state.

One update (``SACAgent.update``), as in RLPD / SERL:
  1. split the batch into ``utd_ratio`` equal minibatches;
  2. on each: one critic step (critic ensemble + shared encoder, and the gripper double-DQN
     critic alongside), then a Polyak step of the target networks;
  3. on the last minibatch: one actor step and one temperature step, on the encoder features
     of that minibatch's critic step (detached).
The encoder is shared: the critic losses train it, the actor reads its features detached.
Action layout: (A,) in [-1, 1]; under ``hybrid_gripper`` the last dim is the gripper (see
``robot_rl.agents.gripper``) and the actor and critic ensemble see only the first A - 1 dims.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
from collections.abc import Iterator
from typing import Any

import gymnasium
import numpy as np
import torch
from torch import nn

from robot_rl.agents.config import SACConfig
from robot_rl.agents.encoders import ShiftedFloatImages, build_observation_encoder, random_shift
from robot_rl.agents.gripper import (
    GripperCritic,
    double_dqn_target,
    gripper_index_to_value,
    gripper_value_to_index,
)
from robot_rl.agents.networks import CriticEnsemble, TanhGaussianActor
from robot_rl.agents.spaces import SpaceError, check_spaces
from robot_rl.data.batch import STATE_KEY, Batch

log = logging.getLogger(__name__)

FEATURE_MAP_DTYPES = (torch.float16, torch.float32)  # of cached feature maps in a Batch

# Config fields that decide network shapes: a checkpoint only loads into an agent that agrees.
ARCHITECTURE_FIELDS = (
    "critic_ensemble_size",
    "hidden_dims",
    "latent_dim",
    "state_latent_dim",
    "num_spatial_features",
    "encoder",
    "conv_preset",
    "hybrid_gripper",
    "state_input",  # no shape of its own, but the same weights compute another function
)
# What a checkpoint saved before a field existed ran with (where that differs from its default).
_SAVED_BEFORE_THE_FIELD = {"state_input": "raw"}


class SACAgent:
    """SAC learner and policy for Dict(cameras, "state") observations and [-1, 1] Box actions.

    Attributes: ``device`` (torch.device), ``config``, ``spec`` (camera shapes, state and action
    dims), ``critic_steps`` and ``actor_steps`` (update counters).
    """

    def __init__(
        self,
        observation_space: gymnasium.spaces.Dict,
        action_space: gymnasium.spaces.Box,
        config: SACConfig,
        seed: int,
    ) -> None:
        self.config = config
        self.device = config.resolved_device()
        self.spec = check_spaces(
            observation_space, action_space, config.encoder, config.hybrid_gripper
        )
        self.continuous_action_dim = self.spec.continuous_action_dim(config.hybrid_gripper)
        self.target_entropy = (
            config.target_entropy
            if config.target_entropy is not None
            else -self.continuous_action_dim / 2.0
        )
        # bfloat16 autocast on CUDA only; bfloat16 needs no loss scaling.
        use_amp = self.device.type == "cuda" and config.amp and torch.cuda.is_bf16_supported()
        self._amp_dtype = torch.bfloat16 if use_amp else None

        # Build every network from `seed` without touching the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = build_observation_encoder(self.spec, config)
            feature_dim = self.encoder.out_dim
            self.actor = TanhGaussianActor(
                feature_dim, self.continuous_action_dim, config.hidden_dims
            )
            self.critic = CriticEnsemble(
                config.critic_ensemble_size,
                feature_dim,
                self.continuous_action_dim,
                config.hidden_dims,
            )
            self.gripper_critic = (
                GripperCritic(feature_dim, config.hidden_dims) if config.hybrid_gripper else None
            )
        self.target_encoder = _frozen_copy(self.encoder)
        self.target_critic = _frozen_copy(self.critic)
        self.target_gripper_critic = (
            _frozen_copy(self.gripper_critic) if self.gripper_critic is not None else None
        )
        for module in self._modules().values():
            module.to(self.device)
        self.log_alpha = torch.tensor(
            math.log(config.init_temperature), device=self.device, requires_grad=True
        )

        # The fused Adam kernel: the same update, ~3x faster than the per-tensor loop on CPU.
        fused = self.device.type in ("cpu", "cuda")
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.lr, fused=fused)
        self.critic_optimizer = torch.optim.Adam(
            self._critic_parameters(), lr=config.lr, fused=fused
        )
        self.temperature_optimizer = torch.optim.Adam([self.log_alpha], lr=config.lr, fused=fused)
        self.gripper_optimizer = (
            torch.optim.Adam(self.gripper_critic.parameters(), lr=config.lr, fused=fused)
            if self.gripper_critic is not None
            else None
        )
        # The CPU speed-ups of issue 15 that keep the update's result (block-copy augmentation,
        # one conversion of next_obs for the online and target encoders). False: the update path
        # as it was before them, which ``robot-rl bench learner`` times beside this one.
        self.fast_update_paths = True
        self._staged_images = ShiftedFloatImages()  # the CPU conv path's input buffers
        # The agent owns its random streams: updates (augmentation, actor noise, critic subset)
        # and acting draw from separate generators, so one never shifts the other.
        self.update_generator = torch.Generator(self.device).manual_seed(seed)
        self.act_generator = torch.Generator(self.device).manual_seed(seed + 1)
        self.critic_steps = 0
        self.actor_steps = 0
        self.skipped_steps = 0  # optimizer steps skipped for a non-finite loss or gradient

    # ---------------------------------------------------------------- acting

    @property
    def temperature(self) -> float:
        """The entropy temperature alpha."""
        return float(self.log_alpha.detach().exp())

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], deterministic: bool) -> np.ndarray:
        """Action (A,) float32 in [-1, 1] for one observation (no batch dim, numpy arrays).

        deterministic: the squashed mean (evaluation) instead of a sample (exploration). The
        gripper is always the greedy action of its critic (as -1, 0 or +1); its exploration comes
        from the operator's interventions.
        """
        batch_obs = {k: v.unsqueeze(0) for k, v in self._obs_to_tensors(obs).items()}
        with self._autocast():
            features = self.encoder(batch_obs)
            if deterministic:
                actions = self.actor.deterministic(features)
            else:
                actions, _ = self.actor.sample(features, self.act_generator)
            if self.gripper_critic is not None:
                gripper_index = self.gripper_critic(features).argmax(dim=-1)
                gripper = gripper_index_to_value(gripper_index).unsqueeze(-1)
                actions = torch.cat([actions.float(), gripper], dim=-1)
        return actions[0].float().cpu().numpy()

    # ---------------------------------------------------------------- learning

    def update(self, batch: Batch) -> dict[str, float]:
        """``utd_ratio`` critic steps on equal minibatches, then one actor + temperature step.

        batch: see ``robot_rl.data.batch.Batch``; its size must be a multiple of utd_ratio. The
        critic steps take consecutive slices, so lay the batch out as ``utd_ratio`` minibatches
        (``sample_mixed`` and ``ReplayBuffer.sample`` do, given ``minibatches=utd_ratio``).
        Returns means over the critic steps of critic_loss, q_mean, td_error (mean |Q - target|),
        gripper_loss; the actor step's actor_loss, temperature_loss, entropy; the temperature
        after the update; and the critic_steps / actor_steps counters.
        """
        self._check_batch(batch)
        batch = batch.to(self.device, non_blocking=True)
        critic_infos = []
        for minibatch in _split(batch, self.config.utd_ratio):
            info, features = self._critic_step(minibatch)
            critic_infos.append(info)
            self._update_targets()  # Polyak after every critic step
        # RLPD: the actor learns once per update, on the last minibatch. Like DrQ-v2 it reuses
        # that step's (augmented) encoder features rather than encoding the images again.
        actor_info = self._actor_step(features)

        metrics = {k: torch.stack([i[k] for i in critic_infos]).mean() for k in critic_infos[0]}
        metrics.update(actor_info)
        values = torch.stack([v.float() for v in metrics.values()]).tolist()  # one host sync
        out = dict(zip(metrics, values, strict=True))
        out["temperature"] = self.temperature
        out["critic_steps"] = float(self.critic_steps)
        out["actor_steps"] = float(self.actor_steps)
        return out

    def critic_loss(
        self, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Critic ensemble TD loss plus the gripper double-DQN loss, on an on-device batch.

        Both train the shared encoder. Returns the summed loss, the encoder features of the
        augmented batch.obs (B, F) (still attached to the graph) and detached metrics.
        """
        cfg = self.config
        # Feature maps from a frozen-backbone cache: no images, so no DrQ shift (SACConfig).
        cached = batch.obs_features is not None
        staged = not cached and self._stages_images()
        if staged:  # shifted float images in reused buffers; obs and next_obs give the state
            obs_images = self._stage(batch.obs, "obs")
            next_images = self._stage(batch.next_obs, "next")
            obs, next_obs = batch.obs, batch.next_obs
        else:
            obs = batch.obs if cached else self._augment(batch.obs)
            next_obs = batch.next_obs if cached else self._augment(batch.next_obs)
        actions, gripper_index = self._split_actions(batch.actions)
        alpha = self.log_alpha.exp().detach()

        with torch.no_grad(), self._autocast():
            next_maps = target_maps = None
            if cached:
                next_maps = target_maps = _float_maps(batch.next_obs_features)
            elif staged:
                next_maps = self.encoder.unscaled_feature_maps(next_images)
                if cfg.target_encoder:
                    target_maps = self.target_encoder.unscaled_feature_maps(next_images)
            elif cfg.freeze_encoder:
                # Frozen backbones are the same in the online and target encoders (Polyak between
                # equal weights keeps them equal): their next_obs feature maps are computed once.
                next_maps = target_maps = self.encoder.feature_maps(next_obs)
            elif cfg.target_encoder and self.fast_update_paths:
                # Two backbones, one float conversion of the next_obs images.
                next_maps, target_maps = self.encoder.feature_maps_with(
                    self.target_encoder, next_obs
                )
            next_features = self.encoder(next_obs, next_maps)  # the actor picks a' from these
            if cfg.target_encoder:
                next_target_features = self.target_encoder(next_obs, target_maps)
            else:  # DrQ-v2's choice (opt-in): the target critics read the online features
                next_target_features = next_features
            next_actions, next_log_prob = self.actor.sample(next_features, self.update_generator)
            next_q = self.target_critic(next_target_features, next_actions).float()  # (N, B)
            # Min over a random M of the N target critics (RLPD): curbs over-estimation.
            subset = self._random_critic_subset()
            next_value = next_q[subset].min(dim=0).values - alpha * next_log_prob
            # discounts is gamma^n, or 0 when the n steps reached a terminal state.
            target_q = batch.rewards + batch.discounts * next_value

        with self._autocast():
            obs_maps = _float_maps(batch.obs_features) if cached else None
            if staged:
                obs_maps = self.encoder.unscaled_feature_maps(obs_images)
            features = self.encoder(obs, obs_maps)
            q = self.critic(features, actions).float()  # (N, B)
        td = q - target_q.unsqueeze(0)
        loss = td.pow(2).mean()
        info = {
            "critic_loss": loss.detach(),
            "q_mean": q.detach().mean(),
            "td_error": td.detach().abs().mean(),
        }

        if self.gripper_critic is not None:
            with torch.no_grad(), self._autocast():
                gripper_rewards = (
                    batch.rewards - cfg.gripper_penalty_weight * batch.gripper_penalties
                )
                gripper_target = double_dqn_target(
                    gripper_rewards,
                    batch.discounts,
                    self.gripper_critic(next_features).float(),
                    self.target_gripper_critic(next_target_features).float(),
                )
            with self._autocast():
                gripper_q_all = self.gripper_critic(features).float()  # (B, 3)
            gripper_q = gripper_q_all.gather(-1, gripper_index.unsqueeze(-1)).squeeze(-1)
            gripper_loss = (gripper_q - gripper_target).pow(2).mean()
            loss = loss + gripper_loss
            info["gripper_loss"] = gripper_loss.detach()
        return loss, features, info

    def actor_loss(
        self, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """SAC actor loss E[alpha log pi - mean_i Q_i] and the temperature loss.

        features: (B, F) encoder output. Returns (actor_loss, temperature_loss, detached
        metrics). Neither loss reaches the encoder.
        """
        features = features.detach()  # the actor's gradient stops at the encoder
        alpha = self.log_alpha.exp().detach()
        with self._autocast():
            actions, log_prob = self.actor.sample(features, self.update_generator)
            q = self.critic(features, actions).float().mean(dim=0)  # ensemble mean, (B,)
        actor_loss = (alpha * log_prob - q).mean()
        # Raise alpha when the entropy -log pi is below target, lower it when above.
        temperature_loss = -(
            self.log_alpha.exp() * (log_prob.detach() + self.target_entropy)
        ).mean()
        info = {
            "actor_loss": actor_loss.detach(),
            "temperature_loss": temperature_loss.detach(),
            "entropy": -log_prob.detach().mean(),
        }
        return actor_loss, temperature_loss, info

    def _critic_step(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        loss, features, info = self.critic_loss(batch)
        self.critic_optimizer.zero_grad(set_to_none=True)
        if self.gripper_optimizer is not None:
            self.gripper_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizers = [self.critic_optimizer]
        if self.gripper_optimizer is not None:
            optimizers.append(self.gripper_optimizer)
        if self._step_if_finite(loss, optimizers):
            self.critic_steps += 1
        return info, features.detach()

    def _actor_step(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        actor_loss, temperature_loss, info = self.actor_loss(features)
        self.actor_optimizer.zero_grad(set_to_none=True)
        self.temperature_optimizer.zero_grad(set_to_none=True)
        # The two losses share no parameters (each detaches the other's), so one backward.
        loss = actor_loss + temperature_loss
        loss.backward()
        if self._step_if_finite(loss, [self.actor_optimizer, self.temperature_optimizer]):
            self.actor_steps += 1
        # The actor loss also left gradients on the critic; they are not stepped, drop them.
        self.critic.zero_grad(set_to_none=True)
        return info

    @torch.no_grad()
    def _update_targets(self) -> None:
        for online, target in self._target_pairs():
            # Frozen parameters (pretrained backbones) are equal in both copies and stay so:
            # skipping them spares a ResNet-10's ~10M values per critic step.
            pairs = [
                (t, o)
                for o, t in zip(online.parameters(), target.parameters(), strict=True)
                if o.requires_grad
            ]
            if pairs:
                target_params, online_params = map(list, zip(*pairs, strict=True))
                # target <- target + tau * (online - target)
                torch._foreach_lerp_(target_params, online_params, self.config.tau)

    # ---------------------------------------------------------------- state

    def policy_state_dict(self) -> dict[str, Any]:
        """What an acting process needs: encoder, actor and gripper critic weights (tensors)."""
        state = {"encoder": self.encoder.state_dict(), "actor": self.actor.state_dict()}
        if self.gripper_critic is not None:
            state["gripper_critic"] = self.gripper_critic.state_dict()
        return state

    def load_policy_state_dict(self, state: dict[str, Any]) -> None:
        """Load ``policy_state_dict`` output (e.g. weights published by the learner)."""
        self.encoder.load_state_dict(state["encoder"])
        self.actor.load_state_dict(state["actor"])
        if self.gripper_critic is not None:
            self.gripper_critic.load_state_dict(state["gripper_critic"])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: networks, targets, optimizers, alpha, counters,
        random streams, and the config (plain types and tensors: loads with weights_only=True)."""
        optimizers = {name: opt.state_dict() for name, opt in self._optimizers().items()}
        return {
            "config": dataclasses.asdict(self.config),
            "networks": {name: m.state_dict() for name, m in self._modules().items()},
            "log_alpha": self.log_alpha.detach().clone(),
            "optimizers": optimizers,
            "critic_steps": self.critic_steps,
            "actor_steps": self.actor_steps,
            "rng": {
                "device_type": self.device.type,
                "update": self.update_generator.get_state(),
                "act": self.act_generator.get_state(),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict`` output; the agent must have been built with the same
        architecture fields (ValueError naming the fields that differ otherwise)."""
        differ = architecture_differences(state["config"], self.config)
        if differ:
            raise ValueError(
                "checkpoint architecture differs from this agent: " + "; ".join(differ)
            )
        modules = self._modules()
        if set(state["networks"]) != set(modules):
            raise ValueError(
                f"checkpoint networks {sorted(state['networks'])} differ from {sorted(modules)}"
            )
        for name, module in modules.items():
            module.load_state_dict(state["networks"][name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for name, optimizer in self._optimizers().items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.critic_steps = int(state["critic_steps"])
        self.actor_steps = int(state["actor_steps"])
        rng = state["rng"]
        if rng["device_type"] == self.device.type:
            self.update_generator.set_state(rng["update"])
            self.act_generator.set_state(rng["act"])
        else:  # CPU and CUDA generators have different states: the resume is not bit-exact
            log.warning(
                "random streams saved on %s cannot be restored on %s; keeping this agent's",
                rng["device_type"],
                self.device.type,
            )

    # ---------------------------------------------------------------- helpers

    def _modules(self) -> dict[str, nn.Module]:
        modules = {
            "encoder": self.encoder,
            "actor": self.actor,
            "critic": self.critic,
            "target_encoder": self.target_encoder,
            "target_critic": self.target_critic,
        }
        if self.gripper_critic is not None:
            modules["gripper_critic"] = self.gripper_critic
            modules["target_gripper_critic"] = self.target_gripper_critic
        return modules

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optimizers = {
            "actor": self.actor_optimizer,
            "critic": self.critic_optimizer,
            "temperature": self.temperature_optimizer,
        }
        if self.gripper_optimizer is not None:
            optimizers["gripper"] = self.gripper_optimizer
        return optimizers

    def _target_pairs(self) -> Iterator[tuple[nn.Module, nn.Module]]:
        yield self.encoder, self.target_encoder
        yield self.critic, self.target_critic
        if self.gripper_critic is not None:
            yield self.gripper_critic, self.target_gripper_critic

    def _critic_parameters(self) -> list[nn.Parameter]:
        encoder_params = [p for p in self.encoder.parameters() if p.requires_grad]
        return encoder_params + list(self.critic.parameters())

    def _clip(self, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """Clip the optimizer's gradients to ``grad_clip_norm`` (if set); their total norm."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if self.config.grad_clip_norm is not None:
            return nn.utils.clip_grad_norm_(params, self.config.grad_clip_norm)
        grads = [p.grad for p in params if p.grad is not None]
        return nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)

    def _step_if_finite(self, loss: torch.Tensor, optimizers: list[torch.optim.Optimizer]) -> bool:
        """Clip and step ``optimizers`` only if ``loss`` and every gradient are finite; else drop
        the gradients, count a skipped step and return False (one NaN must never reach the
        weights: they are published to the actors). One host sync per call."""
        norms = [self._clip(optimizer) for optimizer in optimizers]
        finite = torch.isfinite(loss.detach()).all()
        for norm in norms:
            finite = finite & torch.isfinite(norm)
        if not bool(finite):
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            if self.skipped_steps & (self.skipped_steps - 1) == 0:  # 1, 2, 4, 8, ...: not a flood
                log.warning("SAC: skipped an optimizer step with a non-finite loss or gradient "
                            "(%d skipped so far)", self.skipped_steps)  # fmt: skip
            return False
        for optimizer in optimizers:
            optimizer.step()
        return True

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._amp_dtype)

    def _stages_images(self) -> bool:
        """Whether critic steps take the staged CPU path: the conv backbones' input shifted and
        converted to float in one pass into reused buffers (``ShiftedFloatImages``), each
        camera's next_obs buffer read by the online and target backbones. Same draws and values
        as ``_augment`` then ``camera_feature_maps``."""
        return (
            self.fast_update_paths
            and self.device.type == "cpu"
            and not self.config.freeze_encoder
            and self.encoder.folds_input_scale
        )

    def _stage(self, obs: dict[str, torch.Tensor], role: str) -> dict[str, torch.Tensor]:
        """Each camera of ``obs`` shifted (``image_augmentation_pad``) into float32
        (B, 3, H, W) in [0, 255], channels-last, in ``role``'s buffers; drawn in ``_augment``'s
        order."""
        pad = self.config.image_augmentation_pad
        return {
            k: self._staged_images.stage(f"{role}/{k}", v, pad, self.update_generator)
            for k, v in obs.items()
            if k != STATE_KEY
        }

    def _augment(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pad = self.config.image_augmentation_pad
        return {
            k: v
            if k == STATE_KEY
            else random_shift(v, pad, self.update_generator, self.fast_update_paths)
            for k, v in obs.items()
        }

    def _random_critic_subset(self) -> torch.Tensor:
        n, m = self.config.critic_ensemble_size, self.config.critic_subsample
        if m == n:
            return torch.arange(n, device=self.device)
        # A uniformly random M-subset: the first M of a random permutation.
        noise = torch.rand(n, generator=self.update_generator, device=self.device)
        return noise.argsort()[:m]

    def _split_actions(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, A) -> continuous (B, A_cont) and, under hybrid_gripper, gripper indices (B,)."""
        if not self.config.hybrid_gripper:
            return actions, None
        return actions[:, :-1], gripper_value_to_index(actions[:, -1])

    def _obs_to_tensors(self, obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        expected = {**self.spec.image_shapes, STATE_KEY: (self.spec.state_dim,)}
        if set(obs) != set(expected):
            raise SpaceError(f"observation keys {sorted(obs)}; expected {sorted(expected)}")
        tensors = {}
        for key, shape in expected.items():
            value = np.asarray(obs[key])
            dtype = np.float32 if key == STATE_KEY else np.uint8
            if value.shape != shape or value.dtype != dtype:
                raise SpaceError(
                    f"obs[{key!r}] is {value.dtype} {value.shape}; "
                    f"expected {np.dtype(dtype)} {shape}"
                )
            tensors[key] = torch.tensor(
                value, device=self.device
            )  # a copy: env arrays may be reused
        return tensors

    def _check_batch(self, batch: Batch) -> None:
        if batch.obs_features is not None or batch.next_obs_features is not None:
            _check_cached_batch(self, batch)
            return
        utd = self.config.utd_ratio
        if batch.size % utd != 0:
            raise ValueError(
                f"batch size {batch.size} is not a multiple of utd_ratio={utd}; "
                "sample batches of utd_ratio * minibatch size"
            )
        expected = {**self.spec.image_shapes, STATE_KEY: (self.spec.state_dim,)}
        for field, obs in (("obs", batch.obs), ("next_obs", batch.next_obs)):
            if set(obs) != set(expected):
                raise ValueError(f"batch.{field} keys {sorted(obs)}; expected {sorted(expected)}")
            for key, shape in expected.items():
                dtype = torch.float32 if key == STATE_KEY else torch.uint8
                if tuple(obs[key].shape[1:]) != shape or obs[key].dtype != dtype:
                    raise ValueError(
                        f"batch.{field}[{key!r}] is {obs[key].dtype} {tuple(obs[key].shape)}; "
                        f"expected {dtype} (B, {', '.join(map(str, shape))})"
                    )
        if tuple(batch.actions.shape) != (batch.size, self.spec.action_dim):
            raise ValueError(
                f"batch.actions has shape {tuple(batch.actions.shape)}; "
                f"expected ({batch.size}, {self.spec.action_dim})"
            )


def _check_cached_batch(agent: SACAgent, batch: Batch) -> None:
    """``SACAgent._check_batch`` for a batch of cached feature maps (``Batch.obs_features``):
    ValueError naming the field unless the encoder is frozen and every field fits."""
    if not agent.config.freeze_encoder:
        raise ValueError(
            "batch carries cached feature maps (obs_features) but this agent's encoder trains "
            "(freeze_encoder=False), so they would be stale; sample from buffers without a "
            "feature cache, or set freeze_encoder: true with pretrained_encoder_path"
        )
    utd = agent.config.utd_ratio
    if batch.size % utd != 0:
        raise ValueError(f"batch size {batch.size} is not a multiple of utd_ratio={utd}")
    maps_expected = {
        name: tuple(camera.spatial.kernel.shape[:3])
        for name, camera in agent.encoder.cameras.items()
    }
    for field in ("obs", "next_obs"):
        obs, maps = getattr(batch, field), getattr(batch, field + "_features")
        if maps is None or set(maps) != set(maps_expected):
            got = None if maps is None else sorted(maps)
            raise ValueError(f"batch.{field}_features keys {got}; expected {sorted(maps_expected)}")
        for name, shape in maps_expected.items():
            m = maps[name]
            if tuple(m.shape) != (batch.size, *shape) or m.dtype not in FEATURE_MAP_DTYPES:
                raise ValueError(
                    f"batch.{field}_features[{name!r}] is {m.dtype} {tuple(m.shape)}; expected "
                    f"float16 or float32 ({batch.size}, {', '.join(map(str, shape))})"
                )
        state = obs.get(STATE_KEY) if set(obs) == {STATE_KEY} else None
        if state is None or tuple(state.shape) != (batch.size, agent.spec.state_dim):
            raise ValueError(
                f"batch.{field} holds {sorted(obs)}; with feature maps expected only "
                f"'{STATE_KEY}' float32 ({batch.size}, {agent.spec.state_dim})"
            )
    if tuple(batch.actions.shape) != (batch.size, agent.spec.action_dim):
        raise ValueError(
            f"batch.actions has shape {tuple(batch.actions.shape)}; "
            f"expected ({batch.size}, {agent.spec.action_dim})"
        )


def _float_maps(maps: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """Cached feature maps (float16 or float32 (B, C, h, w)) as float32."""
    if maps is None:
        raise ValueError("batch has obs_features without next_obs_features; both or neither")
    return {name: m.float() for name, m in maps.items()}


# Architecture fields a checkpoint saved before they existed is read with: their defaults.
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SACConfig)}


def _frozen_copy(module: nn.Module) -> nn.Module:
    """A target network: a copy that no optimizer or backward pass touches."""
    return copy.deepcopy(module).requires_grad_(False)


def _split(batch: Batch, parts: int) -> list[Batch]:
    """``parts`` consecutive minibatches of equal size (see ``SACAgent.update`` on layout)."""

    def split(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return x.tensor_split(parts)

    def split_obs(obs: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        pieces = {k: split(v) for k, v in obs.items()}
        return [{k: pieces[k][i] for k in obs} for i in range(parts)]

    fields = (
        split_obs(batch.obs),
        split(batch.actions),
        split(batch.rewards),
        split_obs(batch.next_obs),
        split(batch.discounts),
        split(batch.gripper_penalties),
        split(batch.intervened),
    )
    if batch.obs_features is not None and batch.next_obs_features is not None:
        fields += (split_obs(batch.obs_features), split_obs(batch.next_obs_features))
    return [Batch(*(f[i] for f in fields)) for i in range(parts)]


def architecture_differences(saved: dict[str, Any], config: SACConfig) -> list[str]:
    """The ARCHITECTURE_FIELDS where a checkpoint's saved config and ``config`` disagree, each as
    "field: saved X, this agent Y" (a field the checkpoint predates counts as what it ran with)."""

    def saved_value(f: str) -> Any:
        return saved.get(f, _SAVED_BEFORE_THE_FIELD.get(f, _DEFAULTS[f]))

    return [
        f"{f}: saved {saved_value(f)!r}, this agent {getattr(config, f)!r}"
        for f in ARCHITECTURE_FIELDS
        if _plain(saved_value(f)) != _plain(getattr(config, f))
    ]


def _plain(value: Any) -> Any:
    """Tuples as lists, so a config compares equal to its saved dict."""
    return list(value) if isinstance(value, tuple) else value
