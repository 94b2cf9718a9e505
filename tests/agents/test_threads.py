"""Thread budgets of the learner and the actor."""

from __future__ import annotations

import logging
import threading

import pytest
import torch

from robot_rl.agents.threads import apply_thread_budget, thread_budget


@pytest.mark.parametrize(
    ("cpus", "learner", "actor"), [(1, 1, 1), (2, 1, 1), (4, 3, 1), (16, 15, 1)]
)
def test_the_actor_gets_one_core_and_the_learner_the_rest(cpus, learner, actor):
    budget = thread_budget(cpus)
    assert (budget.cpus, budget.learner, budget.actor) == (cpus, learner, actor)
    assert budget.threads("alone") == cpus


def test_the_default_counts_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert thread_budget() == thread_budget(3)  # a taskset / cpuset of 3 of the 8
    monkeypatch.delattr("os.sched_getaffinity", raising=False)  # a platform without affinity
    assert thread_budget() == thread_budget(8)
    monkeypatch.setattr("os.cpu_count", lambda: None)  # unknown: assume one core
    assert thread_budget().cpus == 1


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_bad_counts_are_refused(bad):
    with pytest.raises(ValueError, match="cpus="):
        thread_budget(bad)
    with pytest.raises(ValueError, match="actor_threads="):
        thread_budget(4, actor_threads=bad)
    with pytest.raises(ValueError, match="role="):
        thread_budget(4).threads("critic")  # type: ignore[arg-type]


def test_apply_sets_and_logs_the_calling_threads_count(caplog):
    seen = {}
    before = torch.get_num_threads()

    def worker() -> None:  # a thread of its own, so this test's thread keeps its setting
        with caplog.at_level(logging.INFO, logger="robot_rl.agents.threads"):
            seen["returned"] = apply_thread_budget("learner", thread_budget(3))
        seen["torch"] = torch.get_num_threads()
        torch.set_num_threads(before)  # MKL's count is process-wide: leave it as it was

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == {"returned": 2, "torch": 2}
    assert "learner 2 (of 3 cpus" in caplog.text
