"""Updates on cached frozen-backbone feature maps are the updates on the images they came from.

A ResNet-10 with random weights saved to a temporary file stands in for the pretrained one (the
loader's own tests cover the published format); 32x32 images keep it fast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.agents.encoders import ResNet10Backbone, save_backbone_weights
from robot_rl.agents.frozen_features import (
    FrozenBackbones,
    attach_configured_feature_caches,
    attach_feature_caches,
)
from robot_rl.data.batch import Transition
from robot_rl.data.replay import ReplayBuffer
from tests.agents.fakes import make_agent

SIZE = 32


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet10.pt"
    save_backbone_weights(ResNet10Backbone(), path)
    return str(path)


def frozen_agent(weights: str, **overrides: object):
    fields = dict(
        image_size=SIZE,
        encoder="resnet10",
        pretrained_encoder_path=weights,
        freeze_encoder=True,
        utd_ratio=2,
        image_augmentation_pad=0,
    )
    fields.update(overrides)
    return make_agent(seed=5, **fields)


def filled_buffer(steps: int = 24, seed: int = 0) -> ReplayBuffer:
    """Random frames (state dim 5, 4 actions) in episodes of 8 steps."""
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(1000, gamma=0.9, seed=seed)

    def obs() -> dict[str, np.ndarray]:
        o = {c: rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for c in ("front", "wrist")}
        o["state"] = rng.standard_normal(5).astype(np.float32)
        return o

    current = obs()
    for step in range(steps):
        nxt = obs()
        last = (step + 1) % 8 == 0
        action = rng.uniform(-1, 1, 4).astype(np.float32)
        buffer.add(Transition(current, action, float(rng.standard_normal()), nxt, last, False))
        current = obs() if last else nxt
    return buffer


def test_cached_update_is_the_uncached_update_without_augmentation(weights):
    cached_agent, plain_agent = frozen_agent(weights), frozen_agent(weights)
    cached_buffer, plain_buffer = filled_buffer(), filled_buffer()  # same frames, same draws
    attach_feature_caches(cached_agent, [cached_buffer], "float32")
    before = [p.clone() for p in cached_agent.encoder.parameters()]
    critic_before = cached_agent.critic.net[0].weight.clone()
    for _ in range(2):
        cached = cached_buffer.sample(16, minibatches=2)
        plain = plain_buffer.sample(16, minibatches=2)
        assert set(cached.obs) == {"state"}
        assert cached.obs_features["front"].shape == (16, 512, 1, 1)
        torch.testing.assert_close(cached.obs["state"], plain.obs["state"], rtol=0, atol=0)
        with torch.no_grad():
            direct = plain_agent.encoder.cameras["wrist"].feature_map(plain.next_obs["wrist"])
        torch.testing.assert_close(cached.next_obs_features["wrist"], direct, rtol=1e-5, atol=1e-5)
        cached_info, plain_info = cached_agent.update(cached), plain_agent.update(plain)
        for key, value in plain_info.items():
            assert cached_info[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    for name, module in plain_agent._modules().items():
        mine = cached_agent._modules()[name].parameters()
        for a, b in zip(mine, module.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    # Not trivially equal: the critic and every trainable encoder tensor (spatial embeddings,
    # heads, state MLP) moved; the frozen backbones did not.
    assert not torch.equal(cached_agent.critic.net[0].weight, critic_before)
    for a, b in zip(cached_agent.encoder.parameters(), before, strict=True):
        assert torch.equal(a, b) != a.requires_grad
    # Polyak skips the frozen backbones: the target encoder's stay the online ones.
    for online, target in zip(
        cached_agent.encoder.backbones(), cached_agent.target_encoder.backbones(), strict=True
    ):
        for a, b in zip(online.parameters(), target.parameters(), strict=True):
            assert torch.equal(a, b)


def test_float16_cache_update_stays_close(weights):
    cached_agent, plain_agent = frozen_agent(weights), frozen_agent(weights)
    cached_buffer, plain_buffer = filled_buffer(), filled_buffer()
    attach_feature_caches(cached_agent, [cached_buffer], "float16")
    batch = cached_buffer.sample(16, minibatches=2)
    assert batch.obs_features["front"].dtype == torch.float16
    info = cached_agent.update(batch)
    plain_info = plain_agent.update(plain_buffer.sample(16, minibatches=2))
    assert info["critic_loss"] == pytest.approx(plain_info["critic_loss"], rel=1e-2)


def test_loading_weights_into_the_agent_recomputes_the_cache(weights):
    agent = frozen_agent(weights)
    buffer = filled_buffer(steps=8)
    attach_feature_caches(agent, [buffer], "float32")
    cache = buffer.feature_cache
    buffer.sample(64)
    assert cache.frames_encoded == 9  # one episode: 9 frames, all sampled by 64 draws
    buffer.sample(64)
    assert cache.frames_encoded == 9 and cache.invalidations == 0
    agent.load_state_dict(frozen_agent(weights).state_dict())  # backbones copied in place
    buffer.sample(64)
    assert cache.invalidations == 1 and cache.frames_encoded == 18


def test_a_cache_of_a_trained_encoder_is_refused(weights):
    trained = frozen_agent(weights, freeze_encoder=False)
    with pytest.raises(ValueError, match=r"backbone trains .* allowed only with freeze_encoder"):
        attach_feature_caches(trained, [filled_buffer(steps=8)], "float16")
    # A batch of cached maps reaching a trained encoder's update is refused too.
    frozen = frozen_agent(weights)
    buffer = filled_buffer(steps=8)
    attach_feature_caches(frozen, [buffer], "float16")
    with pytest.raises(ValueError, match="encoder trains"):
        trained.update(buffer.sample(8, minibatches=2))
    with pytest.raises(ValueError, match="image_shapes cameras"):
        FrozenBackbones(frozen.encoder, {"front": (SIZE, SIZE, 3)})


def test_the_config_decides_whether_caches_are_attached(weights):
    for agent, attached in (
        (frozen_agent(weights), True),
        (frozen_agent(weights, feature_cache="off"), False),
        (frozen_agent(weights, freeze_encoder=False), False),
    ):
        buffer = filled_buffer(steps=8)
        assert attach_configured_feature_caches(agent, [buffer]) is attached
        assert (buffer.feature_cache is not None) is attached
    with pytest.raises(ValueError, match="feature_cache='half'; allowed: float16, float32, off"):
        frozen_agent(weights, feature_cache="half")


def test_malformed_cached_batches_are_rejected(weights):
    agent = frozen_agent(weights)
    buffer = filled_buffer(steps=8)
    attach_feature_caches(agent, [buffer], "float32")
    batch = buffer.sample(8, minibatches=2)
    wrong_shape = {k: v[:, :256] for k, v in batch.obs_features.items()}
    with pytest.raises(ValueError, match=r"obs_features\['front'\] is torch.float32"):
        agent.update(type(batch)(**{**batch.__dict__, "obs_features": wrong_shape}))
    with pytest.raises(ValueError, match="next_obs_features keys None"):
        agent.update(type(batch)(**{**batch.__dict__, "next_obs_features": None}))


def test_the_learner_core_gives_both_buffers_a_cache(weights, tmp_path):
    from robot_rl.agents.config import SACConfig
    from robot_rl.data.mixing import sample_mixed
    from robot_rl.envs.twin_env import TwinEnvConfig
    from robot_rl.runtime.config import TrainConfig
    from robot_rl.runtime.learner import LearnerCore
    from tests.agents.fakes import spaces

    agent_config = SACConfig(utd_ratio=2, hidden_dims=(32, 32), encoder="resnet10",
                             pretrained_encoder_path=weights, freeze_encoder=True,
                             device="cpu")  # fmt: skip
    config = TrainConfig(env=TwinEnvConfig(task="reach", obs="state"), agent=agent_config,
                         run_dir=str(tmp_path), name="cache")  # fmt: skip
    core = LearnerCore(config, tmp_path / "run")
    core.build_agent(*spaces(SIZE))
    assert core.demo.feature_cache is not None and core.online.feature_cache is not None
    source = filled_buffer(steps=8)
    for _ in range(8):  # the same steps as demos (intervened) and online ones
        batch = source.sample(1)
        step = Transition(
            {k: v[0].numpy() for k, v in batch.obs.items()}, batch.actions[0].numpy(), 0.0,
            {k: v[0].numpy() for k, v in batch.next_obs.items()}, False, True, intervened=True,
        )  # fmt: skip
        core.demo.add(step)
        core.online.add(step)
    batch = sample_mixed(core.demo, core.online, 8, minibatches=2)
    assert batch.obs_features is not None
    assert core.agent.update(batch)["critic_steps"] == 2
