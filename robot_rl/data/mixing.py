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
    minibatches: int = 1,
) -> Batch:
    """A batch of ``batch_size``: half from ``demo`` and half from ``online``; all from one
    buffer when the other is empty. ValueError if both are empty.

    minibatches: the batch is laid out as that many consecutive equal slices, each mixed 50/50
    on its own (demo rows first within a slice), so a learner that splits the batch for its
    update-to-data ratio gives every critic step an RLPD batch. Must divide ``batch_size``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; expected an int >= 1")
    if (
        isinstance(minibatches, bool)
        or not isinstance(minibatches, int)
        or minibatches < 1
        or batch_size % minibatches
    ):
        raise ValueError(
            f"minibatches={minibatches!r}; expected an int >= 1 that divides {batch_size}"
        )
    if len(demo) == 0 and len(online) == 0:
        raise ValueError("cannot sample: the demo and online buffers are both empty")
    if len(online) == 0:
        n_demo = batch_size
    elif len(demo) == 0:
        n_demo = 0
    else:
        n_demo = batch_size // 2
    size = batch_size // minibatches
    parts = []
    for i in range(minibatches):  # spread n_demo as evenly as possible over the slices
        k = (n_demo * (i + 1)) // minibatches - (n_demo * i) // minibatches
        parts += [(demo, k), (online, size - k)]
    return sample_many(parts, device=device, pin_memory=pin_memory)


def route(t: Transition, demo: ReplayBuffer, online: ReplayBuffer) -> None:
    """Store ``t`` in ``online``; if ``t.intervened``, in ``demo`` too, as part of a segment.

    A policy step closes the demo buffer's open segment, so the next intervention starts a new one.
    """
    online.add(t)
    if t.intervened:
        demo.add(t)
    else:
        demo.close_episode()
