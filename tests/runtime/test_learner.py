"""The one learner core: one checkpoint schema that the in-process session and the learner
process both resume, TensorBoard from both, no silent loss of a better checkpoint, runs that
keep everything inside their directory, checkpoints by steps and by minutes."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from robot_rl.runtime.distributed import Actor, DistributedConfig, Learner
from robot_rl.runtime.learner import LearnerCore, checkpoint_counters
from robot_rl.runtime.train import TrainingSession, resume_config
from robot_rl.transport.learner_link import LinkEndpoints
from robot_rl.transport.security import SecurityConfig
from tests.netutil import free_port
from tests.runtime.test_train import params, tiny

pytestmark = pytest.mark.timeout(240)


def _net() -> DistributedConfig:
    ep = LinkEndpoints(f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}")
    return DistributedConfig(ep, SecurityConfig(plaintext=True), weights_period_s=0.2)


def _weights(agent: object) -> list[torch.Tensor]:
    modules = (agent.encoder, agent.actor, agent.critic)
    return [p.detach().clone() for m in modules for p in m.parameters()]


def _learner_tags(run: Path) -> set[str]:
    tags: set[str] = set()
    for events in (run / "tb").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


@pytest.mark.integration
def test_a_checkpoint_resumes_in_the_learner_process_and_back(tmp_path: Path) -> None:
    run = tmp_path / "tiny"
    first = TrainingSession(tiny(tmp_path, env_steps=30, concurrent=False, eval_every=0))
    first.run()
    in_process = checkpoint_counters(run / "checkpoints" / "latest.pt")
    assert in_process is not None and in_process.updates == first.counters.updates > 0

    train = tiny(tmp_path, env_steps=30, learning_starts=5)
    learner = Learner(train, _net(), resume=True)
    assert learner.updates == in_process.updates
    for a, b in zip(_weights(first.agent), _weights(learner.agent), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert learner.steps_received == 30  # the session's stored episodes, replayed
    stop = threading.Event()
    thread = threading.Thread(target=learner.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    actor = Actor(train, learner.net)  # the default spool is inside the run
    assert actor.spool_dir == run / "spool" / "actor-0"
    try:
        actor.run(60)
        assert actor.close(flush_timeout_s=30.0)
        deadline = time.monotonic() + 60
        while learner.updates < in_process.updates + 50 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert learner.steps_received == 90
    distributed = checkpoint_counters(run / "checkpoints" / "latest.pt")
    assert distributed.updates == learner.updates >= in_process.updates + 50
    assert distributed.env_steps == 90
    # The learner process writes TensorBoard: its update metrics, beside the session's.
    assert {"learner/critic_loss", "learner/actor_loss", "learner/utd"} <= _learner_tags(run)

    back = TrainingSession(tiny(tmp_path, env_steps=100, concurrent=False, eval_every=0),
                           resume=True)  # fmt: skip
    assert back.counters.updates == distributed.updates and back.counters.env_steps == 90
    for a, b in zip(_weights(learner.agent), params(back), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    back.run()
    assert back.counters.env_steps == 100 and back.counters.updates > distributed.updates


def test_a_better_checkpoint_is_never_replaced_silently(tmp_path: Path, caplog) -> None:
    session = TrainingSession(tiny(tmp_path, env_steps=25, concurrent=False, eval_every=0))
    session.run()
    run = tmp_path / "tiny"
    trained = session.counters.updates
    # A learner process on the same run without --resume is refused, with the way out...
    with pytest.raises(FileExistsError, match="--resume"):
        Learner(tiny(tmp_path), _net())
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        Learner(tiny(tmp_path, name="never-ran"), _net(), resume=True)
    # ...and a core that saves fewer updates over it keeps the better one as latest.prev.pt.
    core = LearnerCore(tiny(tmp_path), run)
    core.build_agent(session.env.observation_space, session.env.action_space)
    core.counters.updates = 2
    with caplog.at_level(logging.WARNING, logger="robot_rl.runtime.learner"):
        core.checkpoint()
    assert checkpoint_counters(run / "checkpoints" / "latest.prev.pt").updates == trained
    assert checkpoint_counters(run / "checkpoints" / "latest.pt").updates == 2
    assert f"checkpoint of {trained} updates kept as" in caplog.text
    core.counters.updates = 3  # more than what it wrote itself: a plain overwrite
    core.checkpoint()
    assert checkpoint_counters(run / "checkpoints" / "latest.prev.pt").updates == trained


@pytest.mark.integration
def test_a_moved_run_resumes_in_its_new_place(tmp_path: Path) -> None:
    TrainingSession(tiny(tmp_path / "a", env_steps=20, concurrent=False, eval_every=0)).run()
    moved = tmp_path / "b" / "moved"
    moved.parent.mkdir()
    shutil.move(tmp_path / "a" / "tiny", moved)
    config = resume_config(moved, env_steps=30)
    assert config.run_path == moved and config.env_steps == 30
    session = TrainingSession(config, resume=True)
    session.run()
    assert not (tmp_path / "a" / "tiny").exists(), "the resumed run wrote into its old place"
    assert checkpoint_counters(moved / "checkpoints" / "latest.pt").env_steps == 30
    assert sum(1 for _ in (moved / "episodes").glob("episode_*.npz")) >= 2


@pytest.mark.integration
@pytest.mark.parametrize(
    ("every_steps", "every_min", "expected"),
    [(0, 0.0, 1), (10, 0.0, 3 + 1), (0, 1e-9, 30 + 1)],  # the end; by steps; by time, each step
)
def test_checkpoints_by_steps_and_by_minutes(
    tmp_path: Path, every_steps: int, every_min: float, expected: int
) -> None:
    config = tiny(tmp_path, env_steps=30, concurrent=False, eval_every=0,
                  checkpoint_every=every_steps, checkpoint_every_min=every_min)  # fmt: skip
    session = TrainingSession(config)
    writes = []
    save = session.core.checkpoint
    session.core.checkpoint = lambda: (writes.append(session.counters.env_steps), save())[1]
    session.run()
    assert len(writes) == expected and writes[-1] == 30


@pytest.mark.integration
@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_robot_rl_train_stops_cleanly_on_a_signal(tmp_path: Path, signal_name: str) -> None:
    """``robot-rl train`` in a subprocess, signalled mid-run: exit 0 without a traceback, the
    checkpoint, every step taken, the curve, and a run that resumes."""
    import os
    import signal
    import subprocess
    import sys

    from robot_rl.data.episodes import load_episodes

    flags = ["--set", f"run_dir={tmp_path}", "--set", "name=stopped", "--set", "env.task=reach",
             "--set", "env.obs=state", "--set", "env.max_episode_steps=10", "--set", "demos=1",
             "--set", "env_steps=100000", "--set", "batch_size=16", "--set", "learning_starts=5",
             "--set", "agent.hidden_dims=[32, 32]", "--set", "eval_every=0"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "robot_rl", "train", *flags]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    run = tmp_path / "stopped"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(run.glob("episodes/episode_*.npz"))) < 2:
            assert process.poll() is None, process.communicate()[0]
            time.sleep(0.1)
        process.send_signal(getattr(signal, signal_name))
        output, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert "--resume" in output  # says how to continue
    counters = checkpoint_counters(run / "checkpoints" / "latest.pt")
    stored = sum(len(e.transitions) for e in load_episodes(run / "episodes"))
    assert stored == counters.env_steps > 0  # every step taken is on disk, the open one too
    assert (run / "learning_curve.png").is_file()
    resumed = TrainingSession(resume_config(run, env_steps=counters.env_steps + 5), resume=True)
    assert resumed.counters == counters
