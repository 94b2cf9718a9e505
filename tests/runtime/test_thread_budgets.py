"""Each role runs under its torch thread budget (``robot_rl.agents.threads``), and says so in the
log: the in-process session's actor thread ("actor", or "alone" when it also learns) and learner
thread, and the distributed learner and actor."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from robot_rl.runtime.actor import Policy
from robot_rl.runtime.distributed import Actor, DistributedConfig, Learner
from robot_rl.runtime.learner import LearnerCore
from robot_rl.runtime.train import TrainingSession
from robot_rl.transport.learner_link import LinkEndpoints
from robot_rl.transport.security import SecurityConfig
from tests.netutil import free_port
from tests.runtime.test_train import tiny

pytestmark = pytest.mark.timeout(120)

# With 4 cores: the learner 3 threads, the actor 1, one thread that does both 4; each thread starts
# from 2 (``UNBUDGETED``) or the process default, so a role that ran under another role's budget,
# or under none, shows.
CPUS, LEARNER, ACTOR, ALONE, UNBUDGETED = 4, 3, 1, 4, 2


@pytest.fixture
def threads_seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[int]]]:
    """torch.get_num_threads() in every learner step and every policy action, by role."""
    monkeypatch.setattr("robot_rl.agents.threads.usable_cpus", lambda: CPUS)
    seen: dict[str, list[int]] = defaultdict(list)
    learn_once, act = LearnerCore.learn_once, Policy.act

    def learn_spy(self: LearnerCore) -> bool:
        seen["learn"].append(torch.get_num_threads())
        return learn_once(self)

    def act_spy(self: Policy, *args: object, **kwargs: object) -> object:
        seen["act"].append(torch.get_num_threads())
        return act(self, *args, **kwargs)

    monkeypatch.setattr(LearnerCore, "learn_once", learn_spy)
    monkeypatch.setattr(Policy, "act", act_spy)
    before = torch.get_num_threads()
    torch.set_num_threads(UNBUDGETED)  # this (the acting) thread before the run
    yield seen
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("concurrent", "learn", "act", "logged"),
    [(True, LEARNER, ACTOR, ["actor 1 (of 4 cpus", "learner 3 (of 4 cpus"]),
     (False, ALONE, ALONE, ["alone 4 (of 4 cpus"])],
)  # fmt: skip
def test_a_session_learns_and_acts_under_its_budgets(
    tmp_path: Path, threads_seen: dict[str, list[int]], caplog: pytest.LogCaptureFixture,
    concurrent: bool, learn: int, act: int, logged: list[str],
) -> None:  # fmt: skip
    config = tiny(tmp_path, env_steps=14, learning_starts=6, concurrent=concurrent, eval_every=0)
    session = TrainingSession(config)
    with caplog.at_level(logging.INFO, logger="robot_rl.agents.threads"):
        session.run()
    assert session.counters.updates > 0
    assert threads_seen["learn"] and set(threads_seen["learn"]) == {learn}
    assert threads_seen["act"] and set(threads_seen["act"]) == {act}
    for line in logged:
        assert f"torch threads: {line}" in caplog.text
    assert torch.get_num_threads() == UNBUDGETED, "the session left its thread count behind"


def test_the_distributed_learner_and_actor_run_under_their_budgets(
    tmp_path: Path, threads_seen: dict[str, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    train = tiny(tmp_path, demos=1, learning_starts=5, env_steps=14)
    ep = LinkEndpoints(f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}")
    net = DistributedConfig(ep, SecurityConfig(plaintext=True), weights_period_s=0.2)
    learner = Learner(train, net)
    stop = threading.Event()
    thread = threading.Thread(target=learner.run, kwargs={"stop": stop}, daemon=True)
    with caplog.at_level(logging.INFO, logger="robot_rl.agents.threads"):
        thread.start()
        actor = Actor(train, net, tmp_path / "spool")
        try:
            actor.run(14)
            assert actor.close(flush_timeout_s=20.0), "the learner did not store every step"
        finally:
            stop.set()
            thread.join(timeout=30)
    assert learner.updates > 0
    assert threads_seen["learn"] and set(threads_seen["learn"]) == {LEARNER}
    assert threads_seen["act"] and set(threads_seen["act"]) == {ACTOR}
    assert "torch threads: learner 3 (of 4 cpus" in caplog.text
    assert "torch threads: actor 1 (of 4 cpus" in caplog.text
    assert torch.get_num_threads() == UNBUDGETED, "the actor left its thread count behind"
