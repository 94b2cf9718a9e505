"""Critic ensemble (one batched pass == each member alone) and the tanh-Gaussian actor."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the torch idiom
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from robot_rl.agents.networks import (
    CriticEnsemble,
    EnsembleLayerNorm,
    EnsembleLinear,
    TanhGaussianActor,
    mlp,
)


def member_forward(critic: CriticEnsemble, i: int, x: torch.Tensor) -> torch.Tensor:
    """Member i alone: plain F.linear / F.layer_norm on its slice of the weights."""
    for layer in critic.net:
        if isinstance(layer, EnsembleLinear):
            x = F.linear(x, layer.weight[i].T, layer.bias[i])
        elif isinstance(layer, EnsembleLayerNorm):
            x = F.layer_norm(x, x.shape[-1:], layer.weight[i, 0], layer.bias[i, 0], layer.eps)
        else:
            x = layer(x)
    return x.squeeze(-1)


def test_ensemble_batched_pass_equals_each_member_alone():
    torch.manual_seed(0)
    critic = CriticEnsemble(num_members=5, feature_dim=12, action_dim=3, hidden_dims=(16, 16))
    with torch.no_grad():  # members must differ in every parameter, layer norms included
        for p in critic.parameters():
            p.add_(0.1 * torch.randn_like(p))
    features, actions = torch.randn(7, 12), torch.rand(7, 3) * 2 - 1
    q = critic(features, actions)
    assert q.shape == (5, 7)
    x = torch.cat([features, actions], dim=-1)
    for i in range(5):
        assert torch.allclose(q[i], member_forward(critic, i, x), atol=1e-5), i
    assert not torch.allclose(q[0], q[1])


def test_ensemble_members_have_their_own_gradients():
    torch.manual_seed(0)
    critic = CriticEnsemble(num_members=3, feature_dim=4, action_dim=2, hidden_dims=(8,))
    q = critic(torch.randn(5, 4), torch.randn(5, 2))
    q[1].sum().backward()  # only member 1's output
    grad = critic.net[0].weight.grad
    assert grad[1].abs().sum() > 0
    assert torch.equal(grad[0], torch.zeros_like(grad[0]))
    assert torch.equal(grad[2], torch.zeros_like(grad[2]))


def test_mlp_has_layer_norm_in_every_hidden_layer():
    net = mlp(4, (8, 8, 8), 2)
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in net) == 3
    assert isinstance(net[-1], torch.nn.Linear)


def test_actor_log_prob_matches_the_tanh_transformed_gaussian():
    torch.manual_seed(0)
    actor = TanhGaussianActor(feature_dim=6, action_dim=3, hidden_dims=(16,))
    features = torch.randn(64, 6)
    actions, log_prob = actor.sample(features, torch.Generator().manual_seed(1))
    assert actions.shape == (64, 3) and log_prob.shape == (64,)
    assert actions.abs().max() < 1.0
    mean, log_std = actor(features)
    reference = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()])
    # Compare away from |a| ~ 1, where atanh(a) loses precision in the reference.
    ok = actions.abs().max(dim=-1).values < 0.999
    assert ok.sum() > 32
    expected = reference.log_prob(actions).sum(-1)
    assert torch.allclose(log_prob[ok], expected[ok], atol=1e-3)


def test_actor_log_prob_stays_finite_when_saturated():
    actor = TanhGaussianActor(feature_dim=2, action_dim=2, hidden_dims=(4,))
    with torch.no_grad():
        actor.net[-1].bias.copy_(torch.tensor([50.0, -50.0, 0.0, 0.0]))  # means far into the tails
    actions, log_prob = actor.sample(torch.zeros(8, 2))
    assert torch.isfinite(log_prob).all()
    assert torch.all(actions.abs() <= 1.0)


def test_actor_deterministic_is_tanh_of_the_mean():
    torch.manual_seed(0)
    actor = TanhGaussianActor(feature_dim=6, action_dim=2, hidden_dims=(16,))
    features = torch.randn(4, 6)
    mean, _ = actor(features)
    assert torch.equal(actor.deterministic(features), torch.tanh(mean))


def test_actor_log_std_is_bounded():
    actor = TanhGaussianActor(feature_dim=2, action_dim=1, hidden_dims=(4,))
    with torch.no_grad():
        actor.net[-1].bias.copy_(torch.tensor([0.0, 1e4]))
    _, log_std = actor(torch.zeros(1, 2))
    assert log_std.item() <= 2.0
