"""Settings of the SERL-style SAC learner (RLPD recipe: critic ensemble, high UTD, LayerNorm).

One frozen dataclass, loadable with ``robot_rl.config.load_config`` (unknown keys are errors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

MAX_CRITIC_ENSEMBLE_SIZE = 10
ENCODERS = ("conv", "resnet10")
CONV_PRESETS = ("standard", "lean")  # layers: robot_rl.agents.encoders.CONV_PRESET_LAYERS
STATE_INPUTS = ("symlog", "raw")  # robot_rl.agents.encoders.StateEncoder
FEATURE_CACHE_MODES = ("float16", "float32", "off")


@dataclass(frozen=True)
class SACConfig:
    """Hyper-parameters of ``SACAgent``.

    critic_ensemble_size: N critics in the ensemble (1..10), evaluated in one batched pass.
    critic_subsample: M of the N target critics whose minimum forms the target (1..N, RLPD/REDQ).
    utd_ratio: critic updates per actor update; ``SACAgent.update`` splits each batch into this
        many equal minibatches, one critic step on each, then one actor + temperature step.
    discount: gamma per env step. The agent bootstraps with ``Batch.discounts`` (gamma^n or 0), so
        this value is for whoever builds the batches (the replay buffer's n-step returns).
    tau: Polyak rate of the target networks (encoder, critic ensemble, gripper critic), per
        critic step: target <- (1 - tau) * target + tau * online.
    lr: Adam learning rate of the actor, the critic (with the encoder) and the temperature.
    init_temperature: initial entropy temperature alpha (> 0); log(alpha) is learned.
    target_entropy: entropy the temperature aims for (nats); None means -A_cont / 2, where A_cont
        is the number of continuous action dims (the gripper dim excluded under hybrid_gripper).
    grad_clip_norm: clip each network's gradient to this global norm; None disables clipping.
    hidden_dims: hidden layer widths of the actor, each critic and the gripper critic.
    latent_dim: width of each camera's embedding (spatial embedding -> Linear -> LayerNorm -> Tanh).
    state_latent_dim: width of the proprioception embedding of ``obs["state"]``.
    state_input: "symlog" (default) squashes each state entry, sign(x) log(1 + |x|), before the
        state embedding's Linear -> LayerNorm, so that large entries (a TCP offset of 10-20 action
        steps on a long reach) do not drown small ones (the last centimetre to a goal) in the
        LayerNorm; "raw" feeds the state as it is (``agents.encoders.StateEncoder``).
    num_spatial_features: learned spatial kernels per feature-map channel (SERL uses 8).
    encoder: per-camera image backbone: "conv" (small strided CNN, fast on CPU) or "resnet10".
    conv_preset: the "conv" backbone's layers: "standard" (default; (32, 16, 16) feature maps at
        128x128) or "lean" (opt-in: the last 3x3 conv strided too, (32, 8, 8) maps, ~20% less
        update time on CPU per ``robot-rl bench learner``; its learning is unmeasured).
    pretrained_encoder_path: local backbone weights, loaded into every camera's backbone: a ``.pt``
        or ``.safetensors`` state dict (``save_backbone_weights``), or for "resnet10" the folder of
        the published ImageNet ResNet-10 that HIL-SERL and LeRobot use (``model.safetensors``,
        renamed on load). Never downloaded. None: random. With such weights, HIL-SERL's pixel
        default is "resnet10" with ``freeze_encoder: true``.
    freeze_encoder: keep the (pretrained) backbones fixed; their spatial-embedding heads train.
        The online and target encoders then share the backbones' next_obs feature maps (one
        backbone pass fewer per critic step, same result).
    feature_cache: with freeze_encoder, how the learner keeps each stored frame's backbone
        feature maps (``robot_rl.data.feature_cache``): "float16" (default) or "float32". Each
        camera frame then passes through the frozen backbone once, when first sampled, and
        updates train only the spatial-embedding heads, the MLPs and the temperature on the
        cached maps (ResNet-10 at 128x128: 16 KiB per camera per frame in float16). Such updates
        are not augmented: a DrQ shift moves pixels, and the map of a shifted image is not a
        function of the unshifted map (a 4-pixel shift is 1/8 of a ResNet-10 cell, which sees
        the image through 32-pixel strides); exact DrQ means running the backbone per update,
        and a shift of the map itself would be a different, 32-pixel augmentation nobody has
        measured. What then guards the heads against over-fitting a few frames is that the
        features are fixed and pretrained, not augmentation. "off": no cache; every update runs
        the frozen backbones on its (shifted, ``image_augmentation_pad``) images, at the
        backbone's forward cost per image. Ignored when the encoder trains (no cache is valid).
        The acting path always encodes its live frame.
    target_encoder: the target critics read a Polyak-averaged copy of the encoder (SERL's
        default). False (opt-in): they read the online encoder's next_obs features, as in DrQ-v2,
        which saves one of the three encoder passes of a critic step (~1/4 of a pixel update on
        CPU); a change of the algorithm, so measure learning before making it a task's default.
    image_augmentation_pad: DrQ random shift of up to this many pixels (edge-replicated) applied
        to every image in every update; 0 disables augmentation.
    hybrid_gripper: the last action dim is the gripper (close / stay / open), learned by a discrete
        double-DQN critic; the continuous actor and critic see the other A - 1 dims.
    gripper_penalty_weight: the gripper critic's reward is ``rewards - weight * gripper_penalties``.
    device: "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:<index>".
    amp: autocast to bfloat16 on CUDA (ignored on CPU, and on GPUs without bfloat16).
    """

    critic_ensemble_size: int = 2
    critic_subsample: int = 2
    utd_ratio: int = 1
    discount: float = 0.97
    tau: float = 0.005
    lr: float = 3e-4
    init_temperature: float = 0.01
    target_entropy: float | None = None
    grad_clip_norm: float | None = None
    hidden_dims: tuple[int, ...] = (256, 256)
    latent_dim: int = 256
    state_latent_dim: int = 64
    state_input: Literal["symlog", "raw"] = "symlog"
    num_spatial_features: int = 8
    encoder: Literal["conv", "resnet10"] = "conv"
    conv_preset: Literal["standard", "lean"] = "standard"
    pretrained_encoder_path: str | None = None
    freeze_encoder: bool = False
    feature_cache: Literal["float16", "float32", "off"] = "float16"
    target_encoder: bool = True
    image_augmentation_pad: int = 4
    hybrid_gripper: bool = True
    gripper_penalty_weight: float = 1.0
    device: str = "auto"
    amp: bool = True

    def __post_init__(self) -> None:
        def positive_int(name: str, upper: int | None = None) -> None:
            value = getattr(self, name)
            bad = isinstance(value, bool) or not isinstance(value, int) or value < 1
            if bad or (upper is not None and value > upper):
                allowed = f"an integer in [1, {upper}]" if upper else "an integer >= 1"
                raise ValueError(f"{name}={value!r}; allowed: {allowed}")

        positive_int("critic_ensemble_size", MAX_CRITIC_ENSEMBLE_SIZE)
        positive_int("critic_subsample", self.critic_ensemble_size)
        positive_int("utd_ratio")
        positive_int("latent_dim")
        positive_int("state_latent_dim")
        positive_int("num_spatial_features")
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"discount={self.discount!r}; allowed: a number in [0, 1]")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau={self.tau!r}; allowed: a number in (0, 1]")
        if not self.lr > 0.0:
            raise ValueError(f"lr={self.lr!r}; allowed: a number > 0")
        if not self.init_temperature > 0.0:
            raise ValueError(f"init_temperature={self.init_temperature!r}; allowed: a number > 0")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0.0:
            raise ValueError(f"grad_clip_norm={self.grad_clip_norm!r}; allowed: None or > 0")
        if not self.hidden_dims or any(
            isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden_dims
        ):
            raise ValueError(
                f"hidden_dims={self.hidden_dims!r}; allowed: a non-empty tuple of integers >= 1"
            )
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder={self.encoder!r}; allowed: {', '.join(ENCODERS)}")
        if self.state_input not in STATE_INPUTS:
            raise ValueError(
                f"state_input={self.state_input!r}; allowed: {', '.join(STATE_INPUTS)}"
            )
        if self.conv_preset not in CONV_PRESETS:
            raise ValueError(
                f"conv_preset={self.conv_preset!r}; allowed: {', '.join(CONV_PRESETS)}"
            )
        if self.freeze_encoder and self.pretrained_encoder_path is None:
            raise ValueError(
                "freeze_encoder=True with pretrained_encoder_path=None would freeze random "
                "weights; allowed: set pretrained_encoder_path, or freeze_encoder=False"
            )
        if self.feature_cache not in FEATURE_CACHE_MODES:
            raise ValueError(
                f"feature_cache={self.feature_cache!r}; allowed: {', '.join(FEATURE_CACHE_MODES)}"
            )
        pad = self.image_augmentation_pad
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise ValueError(f"image_augmentation_pad={pad!r}; allowed: an integer >= 0")
        if not self.gripper_penalty_weight >= 0.0:
            raise ValueError(
                f"gripper_penalty_weight={self.gripper_penalty_weight!r}; allowed: a number >= 0"
            )
        if self.device not in ("auto", "cpu", "cuda") and not _is_cuda_index(self.device):
            raise ValueError(
                f"device={self.device!r}; allowed: 'auto', 'cpu', 'cuda' or 'cuda:<index>'"
            )

    def resolved_device(self) -> torch.device:
        """The torch device to run on ("auto" becomes CUDA when available, else CPU)."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} but CUDA is not available; use 'cpu'")
        return torch.device(self.device)


def _is_cuda_index(device: str) -> bool:
    prefix, sep, index = device.partition(":")
    return prefix == "cuda" and sep == ":" and index.isdigit()
