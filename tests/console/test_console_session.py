"""Console controls over a sim training session without a browser: pause holds the actor,
software stop damps the twin and refuses targets until cleared, and a session asked to finish
while paused does finish."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from robot_rl.agents.config import SACConfig
from robot_rl.console.server import ConsoleConfig
from robot_rl.envs.twin_env import TwinEnvConfig
from robot_rl.runtime.train import TrainConfig, TrainingSession

pytestmark = pytest.mark.timeout(120)


def test_pause_stop_and_finishing_while_paused(tmp_path: Path) -> None:
    config = TrainConfig(env=TwinEnvConfig(task="reach", obs="state"),
                         agent=SACConfig(hidden_dims=(32, 32)), env_steps=1_000_000, demos=0,
                         interventions=False, learning_starts=1_000_000, concurrent=False,
                         eval_every=0, eval_episodes=1, checkpoint_every=0, run_dir=str(tmp_path),
                         name="c", console=ConsoleConfig(enabled=True, port=0))  # fmt: skip
    session = TrainingSession(config)
    runner = threading.Thread(target=session.run, daemon=True)
    runner.start()
    deadline = time.monotonic() + 30
    while (session.hub is None or session.counters.env_steps < 5) and time.monotonic() < deadline:
        time.sleep(0.02)
    hub = session.hub
    hub.control("pause")
    time.sleep(0.3)
    paused_at = session.counters.env_steps
    time.sleep(0.5)
    assert session.counters.env_steps == paused_at  # the actor holds while paused
    assert hub.snapshot()["paused"] is True
    hub.control("stop")
    hub.control("resume")  # resumed but still stopped: still holding
    time.sleep(0.5)
    assert session.counters.env_steps == paused_at
    assert session.env.scene.loop.stopped  # the twin's control loop damps and refuses targets
    hub.control("clear_stop")
    while session.counters.env_steps <= paused_at and time.monotonic() < deadline + 10:
        time.sleep(0.02)
    assert session.counters.env_steps > paused_at and not session.env.scene.loop.stopped
    hub.control("pause")
    time.sleep(0.2)
    session.stop()  # finishing while paused must not hang
    runner.join(timeout=60)
    assert not runner.is_alive()
