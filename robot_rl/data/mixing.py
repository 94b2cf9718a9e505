"""RLPD-style mixing of a demo buffer and an online buffer, and HIL-SERL routing of steps.

Sampling: half of every batch comes from the demos and half from online experience (RLPD); an
empty side gives its half to the other.

Routing: every step goes to the online buffer; a step the operator (or scripted intervener) drove
goes to the demo buffer as well (HIL-SERL). Interventions cover only parts of an episode, so the
demo buffer stores each contiguous run of intervention steps as its own segment, closed
(``ReplayBuffer.close_episode``) by the first policy step after it. A segment end is not terminal
unless its last step terminated: n-step windows stop at the segment's end and bootstrap from that
step's true next_obs, which the segment keeps as its final frame, with discount gamma^k.
"""

from __future__ import annotations

import torch

from robot_rl.data.batch import Batch, Transition
from robot_rl.data.replay import ReplayBuffer, sample_many


def sample_mixed(
    demo: ReplayBuffer,
    online: ReplayBuffer,
    batch_size: int,
    device: str | torch.device = "cpu",
    pin_memory: bool = False,
) -> Batch:
    """A batch of ``batch_size``: the first ``batch_size // 2`` samples from ``demo``, the rest
    from ``online``; all from one buffer when the other is empty. ValueError if both are empty.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; expected an int >= 1")
    if len(demo) == 0 and len(online) == 0:
        raise ValueError("cannot sample: the demo and online buffers are both empty")
    if len(online) == 0:
        n_demo = batch_size
    elif len(demo) == 0:
        n_demo = 0
    else:
        n_demo = batch_size // 2
    return sample_many(
        [(demo, n_demo), (online, batch_size - n_demo)], device=device, pin_memory=pin_memory
    )


def route(t: Transition, demo: ReplayBuffer, online: ReplayBuffer) -> None:
    """Store ``t`` in ``online``; if ``t.intervened``, in ``demo`` too, as part of a segment.

    A policy step closes the demo buffer's open segment, so the next intervention starts a new one.
    """
    online.add(t)
    if t.intervened:
        demo.add(t)
    else:
        demo.close_episode()
