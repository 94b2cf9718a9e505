"""Console controls over a sim training session without a browser: pause holds the actor,
software stop damps the twin and refuses targets until cleared, and a session asked to finish
while paused does finish. "The actor holds" is shown by counters, not sleeps: the hub counts the
actor's hold cycles (``ConsoleHub.waits``), and the step counter must not move across them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from robot_rl.agents.config import SACConfig
from robot_rl.console.server import ConsoleConfig
from robot_rl.envs.twin_env import TwinEnvConfig
from robot_rl.runtime.train import TrainConfig, TrainingSession

pytestmark = pytest.mark.timeout(120)


def wait_for(condition: Callable[[], object], timeout_s: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def test_pause_stop_and_finishing_while_paused(tmp_path: Path) -> None:
    config = TrainConfig(env=TwinEnvConfig(task="reach", obs="state"),
                         agent=SACConfig(hidden_dims=(32, 32)), env_steps=1_000_000, demos=0,
                         interventions=False, learning_starts=1_000_000, concurrent=False,
                         eval_every=0, eval_episodes=1, checkpoint_every=0, run_dir=str(tmp_path),
                         name="c", console=ConsoleConfig(enabled=True, port=0))  # fmt: skip
    session = TrainingSession(config)
    runner = threading.Thread(target=session.run, daemon=True)
    runner.start()
    wait_for(lambda: session.hub is not None and session.counters.env_steps >= 5, what="steps")
    hub = session.hub

    def holds_for(cycles: int) -> int:
        """Wait until the actor has spent ``cycles`` more hold cycles; the step count then."""
        start = hub.waits
        wait_for(lambda: hub.waits >= start + cycles, what=f"{cycles} hold cycles")
        return session.counters.env_steps

    hub.control("pause")
    wait_for(lambda: hub.snapshot()["paused"] is True, what="the pause applied")
    paused_at = session.counters.env_steps
    assert holds_for(5) == paused_at  # the actor holds while paused
    hub.control("stop")
    hub.control("resume")  # resumed but still stopped: still holding
    wait_for(lambda: hub.snapshot()["stopped"] and not hub.snapshot()["paused"], what="stop")
    assert holds_for(5) == paused_at
    assert session.env.scene.loop.stopped  # the twin's control loop damps and refuses targets
    hub.control("clear_stop")
    wait_for(lambda: session.counters.env_steps > paused_at, what="stepping again")
    assert not session.env.scene.loop.stopped
    hub.control("pause")
    wait_for(lambda: hub.snapshot()["paused"] is True, what="the second pause")
    holds_for(1)
    session.stop()  # finishing while paused must not hang
    runner.join(timeout=60)
    assert not runner.is_alive()


def test_a_session_with_the_console_runs_to_its_end_and_shows_the_learner(tmp_path: Path) -> None:
    # The actor sends the learner's health to the page every 10 steps; a field sent twice there
    # (utd_target) once crashed every console session at step 10.
    config = TrainConfig(env=TwinEnvConfig(task="reach", obs="state"),
                         agent=SACConfig(hidden_dims=(32, 32), utd_ratio=2), env_steps=25,
                         demos=0, interventions=False, learning_starts=1_000_000,
                         concurrent=False, eval_every=0, eval_episodes=1, checkpoint_every=0,
                         run_dir=str(tmp_path), name="h",
                         console=ConsoleConfig(enabled=True, port=0))  # fmt: skip
    session = TrainingSession(config)
    session.run()
    assert session.counters.env_steps == 25
    shown = session.hub.snapshot()
    assert shown["utd_target"] == 2
    assert shown["steps_held"] + shown["steps_stored"] >= 20
