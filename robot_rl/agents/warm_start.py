"""A demo warm start: SAC updates on the demo buffer alone, before the first env step.

Why this form (RLPD-style offline updates, not Cal-QL or a BC pretraining of the actor): it is
the simplest thing that helps and changes nothing else. The demos already enter every online
batch 50/50 (RLPD's symmetric sampling); updating on them first only means the critic has
propagated the demos' sparse rewards back through their states, and the actor leans toward the
demo actions where Q says so, by the time the first online episode starts, instead of spending
the first few hundred env steps of a run acting with a random policy while the critic catches
up. Cal-QL's conservative regularizer guards against the over-estimation that a long purely
offline phase suffers on out-of-distribution actions; a short phase (hundreds to a few thousand
updates) followed by online data, with the critic ensemble's min-over-subset target and
LayerNorm critics, does not need it, so it is left out.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from robot_rl.data.replay import ReplayBuffer

log = logging.getLogger(__name__)


class Updatable(Protocol):
    """What the warm start needs of an agent (``SACAgent`` has it)."""

    config: Any

    def update(self, batch: Any) -> dict[str, float]: ...


def pretrain_on_demos(
    agent: Updatable, demos: ReplayBuffer, updates: int, batch_size: int, device: str = "cpu"
) -> list[dict[str, float]]:
    """Run ``updates`` agent updates on batches of ``batch_size`` drawn from ``demos`` only.

    batch_size: per critic minibatch; each update samples ``utd_ratio`` minibatches of it, like
    the online learner. Returns each update's metrics (the first and the last are logged).
    Raises ValueError for a negative count, or updates > 0 with an empty demo buffer.
    """
    if isinstance(updates, bool) or not isinstance(updates, int) or updates < 0:
        raise ValueError(f"demo_pretrain_updates={updates!r}; allowed: an integer >= 0")
    if updates == 0:
        return []
    if len(demos) == 0:
        raise ValueError(
            f"demo_pretrain_updates={updates} but the demo buffer is empty; record or load demos "
            "(demos: N) or set demo_pretrain_updates: 0"
        )
    utd = agent.config.utd_ratio
    metrics = []
    for _ in range(updates):
        batch = demos.sample(batch_size * utd, device=device, minibatches=utd)
        metrics.append(agent.update(batch))
    log.info("demo warm start: %d updates on %d demo steps; critic_loss %.4g -> %.4g", updates,
             len(demos), metrics[0].get("critic_loss", float("nan")),
             metrics[-1].get("critic_loss", float("nan")))  # fmt: skip
    return metrics
