"""Torch thread budgets for the learner and the actor on one machine.

PyTorch's intra-op pool defaults to one thread per core in every process (and, with its OpenMP
build, every thread that calls ``torch.set_num_threads`` sets its own count). An actor and a
learner that both take every core oversubscribe the CPU: on a 2-core machine an update with the
actor running beside it took 1.03 s with 2 learner threads and 0.20 s with 1. The budget gives
the actor its own core(s) and the learner the rest.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

log = logging.getLogger(__name__)

ROLES = ("learner", "actor", "alone")


@dataclass(frozen=True)
class ThreadBudget:
    """Torch intra-op threads per role. cpus: the cores counted; learner + actor <= cpus when
    cpus >= 2 (with one core both get 1: it cannot be split). ``alone``: a process that acts and
    learns in one thread (in-step training) uses every core."""

    cpus: int
    learner: int
    actor: int

    def threads(self, role: Literal["learner", "actor", "alone"]) -> int:
        """The thread count of ``role``."""
        if role not in ROLES:
            raise ValueError(f"role={role!r}; allowed: {', '.join(ROLES)}")
        return self.cpus if role == "alone" else getattr(self, role)


def usable_cpu_ids() -> list[int]:
    """The cores this process may run on, sorted: its CPU affinity where the platform has one (a
    ``taskset``, a container's cpuset, a parallel seed of ``bench learning --jobs``), else
    ``0 .. os.cpu_count() - 1``; ``[0]`` when unknown."""
    try:
        ids = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        ids = list(range(os.cpu_count() or 1))
    return ids or [0]


def usable_cpus() -> int:
    """How many cores this process may run on (``usable_cpu_ids``)."""
    return len(usable_cpu_ids())


def thread_budget(cpus: int | None = None, actor_threads: int = 1) -> ThreadBudget:
    """Split ``cpus`` (default ``usable_cpus()``) cores: the actor ``actor_threads`` (acting is
    one small forward pass per env step), the learner the rest, each at least 1."""
    if cpus is None:
        cpus = usable_cpus()
    if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
        raise ValueError(f"cpus={cpus!r}; allowed: an integer >= 1")
    if isinstance(actor_threads, bool) or not isinstance(actor_threads, int) or actor_threads < 1:
        raise ValueError(f"actor_threads={actor_threads!r}; allowed: an integer >= 1")
    actor = min(actor_threads, cpus)
    return ThreadBudget(cpus=cpus, learner=max(1, cpus - actor), actor=actor)


def apply_thread_budget(
    role: Literal["learner", "actor", "alone"], budget: ThreadBudget | None = None
) -> int:
    """Set the calling thread's torch thread count for ``role`` and log it; returns the count."""
    budget = budget or thread_budget()
    threads = budget.threads(role)
    torch.set_num_threads(threads)
    log.info("torch threads: %s %d (of %d cpus; learner %d, actor %d)", role, threads,
             budget.cpus, budget.learner, budget.actor)  # fmt: skip
    return threads


@contextlib.contextmanager
def thread_budget_scope(
    role: Literal["learner", "actor", "alone"], budget: ThreadBudget | None = None
) -> Iterator[int]:
    """``apply_thread_budget(role)`` for the body (yields the count), then the calling thread's
    previous count back: a training run inside a longer-lived process leaves it as it found it."""
    previous = torch.get_num_threads()
    try:
        yield apply_thread_budget(role, budget)
    finally:
        torch.set_num_threads(previous)
