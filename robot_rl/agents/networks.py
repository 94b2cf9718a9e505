"""Actor and critic networks on top of the observation latent.

Every hidden layer is Linear -> LayerNorm -> ReLU (LayerNorm in the critic is what keeps
high-UTD Q-learning stable in RLPD). The critic ensemble keeps its N members' weights stacked as
(N, in, out) and runs all members in one batched matmul (``torch.baddbmm``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812 - the torch idiom
from torch import nn

# Bounds of the actor's log standard deviation (std in [0.0067, 7.4]).
LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0


def mlp(in_dim: int, hidden_dims: Sequence[int], out_dim: int) -> nn.Sequential:
    """Linear -> LayerNorm -> ReLU for every hidden width, then a plain Linear to ``out_dim``."""
    layers: list[nn.Module] = []
    for width in hidden_dims:
        layers += [nn.Linear(in_dim, width), nn.LayerNorm(width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class EnsembleLinear(nn.Module):
    """N independent linear layers: x (N, B, in) -> (N, B, out), one ``baddbmm``.

    weight (N, in, out) and bias (N, out), each member initialized like ``nn.Linear``.
    """

    def __init__(self, num_members: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(
            torch.empty(num_members, in_dim, out_dim).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.empty(num_members, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dim with a separate scale and shift per member: (N, B, D)."""

    def __init__(self, num_members: int, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_members, 1, dim))
        self.bias = nn.Parameter(torch.zeros(num_members, 1, dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], eps=self.eps) * self.weight + self.bias


class CriticEnsemble(nn.Module):
    """N Q-functions Q_i(z, a), all evaluated in one batched pass.

    forward(features (B, F), actions (B, A)) -> (N, B) Q-values.
    """

    def __init__(
        self, num_members: int, feature_dim: int, action_dim: int, hidden_dims: Sequence[int]
    ) -> None:
        super().__init__()
        self.num_members = num_members
        layers: list[nn.Module] = []
        in_dim = feature_dim + action_dim
        for width in hidden_dims:
            layers += [
                EnsembleLinear(num_members, in_dim, width),
                EnsembleLayerNorm(num_members, width),
                nn.ReLU(),
            ]
            in_dim = width
        layers.append(EnsembleLinear(num_members, in_dim, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x = torch.cat([features, actions], dim=-1)
        # Every member sees the same input: a stride-0 view, no copy.
        x = x.unsqueeze(0).expand(self.num_members, -1, -1)
        return self.net(x).squeeze(-1)


class TanhGaussianActor(nn.Module):
    """pi(a | z): a Gaussian in pre-tanh space squashed by tanh into (-1, 1)^A.

    forward(features (B, F)) -> mean (B, A), log_std (B, A), pre-tanh.
    """

    def __init__(self, feature_dim: int, action_dim: int, hidden_dims: Sequence[int]) -> None:
        super().__init__()
        self.net = mlp(feature_dim, hidden_dims, 2 * action_dim)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw_log_std = self.net(features).float().chunk(2, dim=-1)
        # Smoothly squash log_std into [LOG_STD_MIN, LOG_STD_MAX] (no dead gradient at a clamp).
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(raw_log_std) + 1)
        return mean, log_std

    def sample(
        self, features: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized sample: actions (B, A) in (-1, 1) and their log-probability (B,)."""
        mean, log_std = self(features)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        pre_tanh = mean + log_std.exp() * noise
        actions = torch.tanh(pre_tanh)
        # log N(u; mean, std) summed over dims, from noise = (u - mean) / std.
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # Change of variables for a = tanh(u): log|da/du| = log(1 - tanh(u)^2)
        # = 2 * (log 2 - u - softplus(-2u)), the form that stays finite for large |u|.
        log_prob = log_prob - (2 * (math.log(2) - pre_tanh - F.softplus(-2 * pre_tanh))).sum(-1)
        return actions, log_prob

    def deterministic(self, features: torch.Tensor) -> torch.Tensor:
        """The mode of the squashed Gaussian's pre-image: tanh(mean), (B, A)."""
        mean, _ = self(features)
        return torch.tanh(mean)
