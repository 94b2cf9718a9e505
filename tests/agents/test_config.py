"""SACConfig: defaults, validation errors that name the field, loading from YAML-like dicts."""

from __future__ import annotations

import pytest
import torch

from robot_rl.agents.config import SACConfig
from robot_rl.config import ConfigError, from_dict


def test_defaults():
    config = SACConfig()
    assert config.critic_ensemble_size == 2 and config.critic_subsample == 2
    assert config.utd_ratio == 1 and config.discount == 0.97 and config.tau == 0.005
    assert config.lr == 3e-4 and config.init_temperature == 0.01
    assert config.target_entropy is None and config.grad_clip_norm is None
    assert config.hidden_dims == (256, 256) and config.encoder == "conv"
    assert config.image_augmentation_pad == 4 and config.hybrid_gripper
    assert config.device == "auto" and config.amp


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("critic_ensemble_size", 0),
        ("critic_ensemble_size", 11),
        ("critic_ensemble_size", 2.0),
        ("critic_subsample", 3),  # more than the 2 critics
        ("utd_ratio", 0),
        ("latent_dim", 0),
        ("discount", 1.5),
        ("tau", 0.0),
        ("lr", -1e-3),
        ("init_temperature", 0.0),
        ("grad_clip_norm", 0.0),
        ("hidden_dims", ()),
        ("hidden_dims", (256, 0)),
        ("encoder", "vit"),
        ("conv_preset", "tiny"),
        ("state_input", "tanh"),
        ("image_augmentation_pad", -1),
        ("gripper_penalty_weight", -0.1),
        ("device", "tpu"),
        ("device", "cuda:x"),
    ],
)
def test_bad_values_name_the_field_and_what_is_allowed(field, value):
    with pytest.raises(ValueError, match=f"{field}=") as info:
        SACConfig(**{field: value})
    assert "allowed" in str(info.value)


def test_freezing_random_weights_is_an_error():
    with pytest.raises(ValueError, match="pretrained_encoder_path"):
        SACConfig(freeze_encoder=True)


def test_subsample_up_to_ensemble_size():
    config = SACConfig(critic_ensemble_size=10, critic_subsample=2)
    assert config.critic_subsample == 2


def test_loads_from_a_yaml_mapping():
    config = from_dict(SACConfig, {"hidden_dims": [64, 64], "utd_ratio": 4, "encoder": "resnet10"})
    assert config.hidden_dims == (64, 64) and config.utd_ratio == 4 and config.encoder == "resnet10"
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(SACConfig, {"utd": 4})
    with pytest.raises(ConfigError, match="encoder"):
        from_dict(SACConfig, {"encoder": "vit"})


def test_auto_device_without_cuda_is_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert SACConfig().resolved_device() == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        SACConfig(device="cuda").resolved_device()
