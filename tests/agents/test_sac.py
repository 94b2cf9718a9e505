"""SACAgent: learning signal, Bellman targets, gradient flow, counters, spaces, acting."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

from robot_rl.actions import gripper_value_to_index
from robot_rl.agents.encoders import ResNet10Backbone, save_backbone_weights
from robot_rl.agents.sac import SACAgent
from robot_rl.agents.spaces import SpaceError
from robot_rl.data.batch import Batch
from tests.agents.fakes import make_agent, random_batch, small_config, spaces

METRICS = {
    "critic_loss",
    "q_mean",
    "td_error",
    "gripper_loss",
    "actor_loss",
    "temperature_loss",
    "entropy",
    "temperature",
    "critic_steps",
    "actor_steps",
}


def bandit_batch(agent: SACAgent, n: int = 64) -> Batch:
    """A contextual bandit: context +-1 shows as a black / white image and as state[0];
    reward = context * action[0]; every transition is terminal, so Q*(s, a) = r."""
    g = torch.Generator().manual_seed(0)
    context = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)
    image = torch.where(context > 0, 255, 0).to(torch.uint8)[:, None, None, None]
    obs = {"front": image.expand(n, 8, 8, 3).contiguous(), "state": torch.zeros(n, 2)}
    obs["state"][:, 0] = context
    actions = torch.rand(n, 2, generator=g) * 2 - 1
    return Batch(
        obs=obs,
        actions=actions,
        rewards=context * actions[:, 0],
        next_obs={k: v.clone() for k, v in obs.items()},
        discounts=torch.zeros(n),
        gripper_penalties=torch.zeros(n),
        intervened=torch.zeros(n, dtype=torch.bool),
    )


def test_update_lowers_td_error_on_a_contextual_bandit():
    # lr 1e-3: 200 Adam steps of a 2-input regression (Q = context * a0, no bootstrapping).
    agent = make_agent(image_size=8, cameras=("front",), state_dim=2, action_dim=2, lr=1e-3)
    batch = bandit_batch(agent)
    first = agent.update(batch)["td_error"]
    for _ in range(200):
        agent.update(batch)
    with torch.no_grad():
        _, _, info = agent.critic_loss(batch)
    # Before learning, |Q - r| is about E|r| = E|a0| = 0.5 (Q starts near 0); a fitted critic
    # is off by a small fraction of that. A fifth of the start leaves room for noise.
    assert first > 0.3
    assert info["td_error"].item() < first / 5


def test_terminal_transitions_do_not_bootstrap():
    agent = make_agent()
    batch = random_batch(agent, 16)
    other_next = random_batch(agent, 16, seed=1).next_obs

    def loss_with(next_obs: dict[str, torch.Tensor], discounts: torch.Tensor) -> float:
        state = agent.update_generator.get_state()
        b = Batch(batch.obs, batch.actions, batch.rewards, next_obs, discounts,
                  batch.gripper_penalties, batch.intervened)  # fmt: skip
        with torch.no_grad():
            loss, _, _ = agent.critic_loss(b)
        agent.update_generator.set_state(state)  # same augmentation and noise each call
        return loss.item()

    zeros = torch.zeros(16)
    assert loss_with(batch.next_obs, zeros) == loss_with(other_next, zeros)
    full = torch.full((16,), 0.9)
    assert loss_with(batch.next_obs, full) != loss_with(other_next, full)


def test_critic_target_is_the_sac_backup():
    """target = r + discounts * (min_i Q_target_i(s', a') - alpha log pi(a'|s')), a' ~ pi(s')."""
    agent = make_agent(image_augmentation_pad=0, critic_ensemble_size=3, critic_subsample=3)
    batch = random_batch(agent, 16)
    with torch.no_grad():
        # Targets differ from the online nets, so using one for the other shows.
        for p in [*agent.target_critic.parameters(), *agent.target_encoder.parameters()]:
            p.add_(0.05 * torch.randn_like(p))
        state = agent.update_generator.get_state()
        next_actions, next_log_prob = agent.actor.sample(
            agent.encoder(batch.next_obs), agent.update_generator
        )
        next_q = agent.target_critic(agent.target_encoder(batch.next_obs), next_actions)
        alpha = agent.temperature
        target = batch.rewards + batch.discounts * (next_q.min(0).values - alpha * next_log_prob)
        q = agent.critic(agent.encoder(batch.obs), batch.actions[:, :-1])
        expected = (q - target).pow(2).mean()
        agent.update_generator.set_state(state)
        _, _, info = agent.critic_loss(batch)
    assert torch.allclose(info["critic_loss"], expected, rtol=1e-5)
    assert torch.allclose(info["td_error"], (q - target).abs().mean(), rtol=1e-5)


def test_gripper_critic_learns_reward_minus_weighted_penalty():
    agent = make_agent(image_augmentation_pad=0, gripper_penalty_weight=2.0)
    batch = random_batch(agent, 16)
    batch = Batch(batch.obs, batch.actions, batch.rewards, batch.next_obs, torch.zeros(16),
                  batch.gripper_penalties, batch.intervened)  # fmt: skip
    with torch.no_grad():
        _, _, info = agent.critic_loss(batch)
        all_q = agent.gripper_critic(agent.encoder(batch.obs))
        index = gripper_value_to_index(batch.actions[:, -1])
        q = all_q[torch.arange(16), index]
    expected = (q - (batch.rewards - 2.0 * batch.gripper_penalties)).pow(2).mean()
    assert torch.allclose(info["gripper_loss"], expected, rtol=1e-5)


def test_actor_gradient_stops_at_the_encoder_and_critic_gradient_reaches_it():
    agent = make_agent()
    batch = random_batch(agent, 8)
    features = agent.encoder(batch.obs)  # attached to the encoder's graph
    assert features.requires_grad
    actor_loss, temperature_loss, _ = agent.actor_loss(features)
    (actor_loss + temperature_loss).backward()
    assert all(p.grad is None for p in agent.encoder.parameters())
    assert all(p.grad is not None for p in agent.actor.parameters())
    assert agent.log_alpha.grad is not None

    loss, critic_features, _ = agent.critic_loss(batch)
    assert critic_features.shape == (8, agent.encoder.out_dim)
    loss.backward()
    for name, p in agent.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in agent.target_encoder.parameters())


def test_update_runs_utd_critic_steps_per_actor_step():
    agent = make_agent(utd_ratio=2)
    metrics = agent.update(random_batch(agent, 16))
    assert set(metrics) == METRICS
    assert all(np.isfinite(v) for v in metrics.values())
    assert metrics["critic_steps"] == 2 and metrics["actor_steps"] == 1
    metrics = agent.update(random_batch(agent, 16, seed=1))
    assert metrics["critic_steps"] == 4 and metrics["actor_steps"] == 2
    assert agent.critic_steps == 4 and agent.actor_steps == 2


def test_without_hybrid_gripper_there_is_no_gripper_critic():
    agent = make_agent(hybrid_gripper=False, action_dim=3)
    assert agent.gripper_critic is None and agent.continuous_action_dim == 3
    metrics = agent.update(random_batch(agent, 8))
    assert set(metrics) == METRICS - {"gripper_loss"}


def test_targets_follow_by_polyak_tau():
    agent = make_agent(tau=0.1)
    before = [p.clone() for p in agent.target_critic.parameters()]
    with torch.no_grad():  # make the target differ from the online net
        for p in agent.target_critic.parameters():
            p.add_(1.0)
    before = [p.clone() for p in agent.target_critic.parameters()]
    agent.update(random_batch(agent, 8))
    for target, old, online in zip(
        agent.target_critic.parameters(), before, agent.critic.parameters(), strict=True
    ):
        assert torch.allclose(target, 0.9 * old + 0.1 * online, atol=1e-6)


def test_random_critic_subset_is_m_distinct_members():
    agent = make_agent(critic_ensemble_size=5, critic_subsample=2)
    seen = set()
    for _ in range(50):
        subset = agent._random_critic_subset().tolist()
        assert len(subset) == 2 and len(set(subset)) == 2
        seen.update(subset)
    assert seen == {0, 1, 2, 3, 4}


def test_target_entropy_defaults_to_minus_half_the_continuous_dims():
    assert make_agent(action_dim=4).target_entropy == -1.5  # 3 continuous + gripper
    assert make_agent(action_dim=4, hybrid_gripper=False).target_entropy == -2.0
    assert make_agent(target_entropy=-3.0).target_entropy == -3.0


def test_same_seed_same_agent_and_global_rng_untouched():
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    a, b = make_agent(seed=5), make_agent(seed=5)
    assert torch.equal(torch.rand(3), expected_draw)
    batch = random_batch(a, 8)
    assert a.update(batch) == b.update(batch)
    for pa, pb in zip(a.encoder.parameters(), b.encoder.parameters(), strict=True):
        assert torch.equal(pa, pb)
    c = make_agent(seed=6)
    assert not torch.equal(a.critic.net[0].weight, c.critic.net[0].weight)


def test_batch_size_must_be_a_multiple_of_utd_ratio():
    agent = make_agent(utd_ratio=3)
    with pytest.raises(ValueError, match="not a multiple of utd_ratio=3"):
        agent.update(random_batch(agent, 16))


def test_batch_must_fit_the_spaces():
    agent = make_agent()
    other = make_agent(action_dim=3)
    with pytest.raises(ValueError, match=r"batch\.actions has shape"):
        agent.update(random_batch(other, 8))
    small = make_agent(image_size=8)
    with pytest.raises(ValueError, match=r"batch.obs\['front'\]"):
        agent.update(random_batch(small, 8))


def _box(shape, dtype=np.float32, low=-1.0, high=1.0):
    return gymnasium.spaces.Box(low, high, shape, dtype)


GOOD_IMAGE = _box((16, 16, 3), np.uint8, 0, 255)
GOOD_STATE = _box((5,), np.float32, -np.inf, np.inf)


@pytest.mark.parametrize(
    ("obs_space", "action_space", "match"),
    [
        (GOOD_STATE, _box((4,)), "gymnasium.spaces.Dict"),
        (gymnasium.spaces.Dict({"front": GOOD_IMAGE}), _box((4,)), "no 'state'"),
        (gymnasium.spaces.Dict({"state": _box((5,), np.float64)}), _box((4,)), "float32"),
        (gymnasium.spaces.Dict({"state": _box((5, 2))}), _box((4,)), r"shape \(D,\)"),
        (
            gymnasium.spaces.Dict(
                {"front": _box((16, 16, 3), np.float32, 0, 1), "state": GOOD_STATE}
            ),
            _box((4,)),
            r"observation_space\['front'\].*uint8",
        ),
        (
            gymnasium.spaces.Dict(
                {"front": _box((16, 16, 4), np.uint8, 0, 255), "state": GOOD_STATE}
            ),
            _box((4,)),
            r"\(H, W, 3\)",
        ),
        (
            gymnasium.spaces.Dict(
                {"front": _box((4, 4, 3), np.uint8, 0, 255), "state": GOOD_STATE}
            ),
            _box((4,)),
            "at least 8x8",
        ),
        (gymnasium.spaces.Dict({"state": GOOD_STATE}), _box((4,), low=-2.0), r"exactly \[-1, 1\]"),
        (gymnasium.spaces.Dict({"state": GOOD_STATE}), _box((4,), high=0.5), r"exactly \[-1, 1\]"),
        (gymnasium.spaces.Dict({"state": GOOD_STATE}), _box((2, 2)), r"shape \(A,\)"),
        (gymnasium.spaces.Dict({"state": GOOD_STATE}), gymnasium.spaces.Discrete(3), "Box"),
        (gymnasium.spaces.Dict({"state": GOOD_STATE}), _box((1,)), "hybrid_gripper"),
    ],
)
def test_bad_spaces_are_rejected_with_a_clear_error(obs_space, action_space, match):
    with pytest.raises(SpaceError, match=match):
        SACAgent(obs_space, action_space, small_config(), seed=0)


@pytest.mark.parametrize("hybrid_gripper", [True, False])
def test_act_returns_an_action_in_the_space(hybrid_gripper):
    obs_space, action_space = spaces(action_dim=4)
    agent = SACAgent(obs_space, action_space, small_config(hybrid_gripper=hybrid_gripper), seed=0)
    obs_space.seed(0)
    for deterministic in (False, True):
        for _ in range(5):
            obs = obs_space.sample()
            action = agent.act(obs, deterministic=deterministic)
            assert action.shape == (4,) and action.dtype == np.float32
            assert action_space.contains(action)
            if hybrid_gripper:
                assert action[-1] in (-1.0, 0.0, 1.0)
    obs = obs_space.sample()
    assert np.array_equal(agent.act(obs, True), agent.act(obs, True))


def test_act_rejects_observations_that_do_not_fit():
    obs_space, _ = spaces()
    agent = make_agent()
    obs = obs_space.sample()
    with pytest.raises(SpaceError, match="observation keys"):
        agent.act({k: v for k, v in obs.items() if k != "wrist"}, True)
    obs["front"] = obs["front"].astype(np.float32)
    with pytest.raises(SpaceError, match=r"obs\['front'\] is float32"):
        agent.act(obs, True)


def test_state_only_task_learns_and_acts():
    agent = make_agent(cameras=())
    assert agent.encoder.camera_names == []
    metrics = agent.update(random_batch(agent, 8))
    assert np.isfinite(metrics["critic_loss"])
    obs_space, action_space = spaces(cameras=())
    assert action_space.contains(agent.act(obs_space.sample(), False))


def test_policy_weights_move_to_an_acting_agent():
    learner, actor = make_agent(seed=0), make_agent(seed=1)
    learner.update(random_batch(learner, 8))
    actor.load_policy_state_dict(learner.policy_state_dict())
    obs_space, _ = spaces()
    obs = obs_space.sample()
    assert np.array_equal(learner.act(obs, True), actor.act(obs, True))


def test_resnet10_loads_its_own_weights_and_freezing_stops_its_gradients(tmp_path):
    torch.manual_seed(0)
    pretrained = ResNet10Backbone()
    path = tmp_path / "resnet10.pt"
    save_backbone_weights(pretrained, path)
    agent = make_agent(
        image_size=32, encoder="resnet10", pretrained_encoder_path=str(path), freeze_encoder=True
    )
    for backbone in agent.encoder.backbones():
        for (name, p), q in zip(
            backbone.state_dict().items(), pretrained.state_dict().values(), strict=True
        ):
            assert torch.equal(p, q), name
    head_before = agent.encoder.cameras["front"].head[0].weight.clone()
    batch = random_batch(agent, 4)
    loss, _, _ = agent.critic_loss(batch)
    loss.backward()
    for backbone in agent.encoder.backbones():
        assert all(p.grad is None for p in backbone.parameters())
    agent.update(batch)
    for backbone in agent.encoder.backbones():
        for p, q in zip(backbone.parameters(), pretrained.parameters(), strict=True):
            assert torch.equal(p, q)
    assert not torch.equal(agent.encoder.cameras["front"].head[0].weight, head_before)


def test_resnet10_without_freezing_trains_the_backbone(tmp_path):
    path = tmp_path / "resnet10.pt"
    save_backbone_weights(ResNet10Backbone(), path)
    agent = make_agent(image_size=32, encoder="resnet10", pretrained_encoder_path=str(path))
    stem_before = agent.encoder.cameras["wrist"].backbone.stem[0].weight.clone()
    agent.update(random_batch(agent, 4))
    assert not torch.equal(agent.encoder.cameras["wrist"].backbone.stem[0].weight, stem_before)


def test_missing_pretrained_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found; copy the weights file"):
        make_agent(
            image_size=32, encoder="resnet10", pretrained_encoder_path=str(tmp_path / "x.pt")
        )


def test_bfloat16_autocast_path_runs():
    # No GPU in CI: CPU autocast stands in for the CUDA one the agent enables on a GPU.
    agent = make_agent()
    agent._amp_dtype = torch.bfloat16
    metrics = agent.update(random_batch(agent, 8))
    assert all(np.isfinite(v) for v in metrics.values())
    action = agent.act(spaces()[0].sample(), deterministic=False)
    assert action.dtype == np.float32 and spaces()[1].contains(action)


@pytest.mark.parametrize("target_encoder", [True, False])
def test_the_cpu_fast_paths_give_the_previous_paths_update(target_encoder):
    # Block-copy augmentation written straight into reused float buffers, one float conversion
    # of next_obs for the online and target encoders, convs with fused ReLUs in no-grad passes
    # and the fused Adam kernel change only the speed: from the same weights and batches the
    # previous paths (bench learner's peer) reach the same weights, to float rounding.
    fast = make_agent(seed=3, utd_ratio=2, target_encoder=target_encoder)
    previous = make_agent(seed=3, utd_ratio=2, target_encoder=target_encoder)
    previous.fast_update_paths = False
    for encoder in (previous.encoder, previous.target_encoder):
        for camera in encoder.cameras.values():
            camera.backbone.fuse_relu = False
            camera.spatial.keep_grad_layout = False
    assert fast._stages_images() and not previous._stages_images()
    for optimizer in previous._optimizers().values():
        for group in optimizer.param_groups:
            group["fused"] = None
    assert fast.critic_optimizer.param_groups[0]["fused"] is True
    for seed in range(3):
        batch = random_batch(fast, 16, seed=seed)
        fast_info, previous_info = fast.update(batch), previous.update(batch)
        for key, value in fast_info.items():
            assert value == pytest.approx(previous_info[key], rel=1e-4, abs=1e-5), key
    for name, module in fast._modules().items():
        for a, b in zip(module.parameters(), previous._modules()[name].parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    # Not trivially equal: the weights did move.
    assert not torch.equal(fast.critic.net[0].weight, make_agent(seed=3).critic.net[0].weight)
