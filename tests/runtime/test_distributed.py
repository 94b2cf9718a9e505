"""``robot-rl learner`` and ``robot-rl actor`` as real processes on loopback with CURVE keys:
the actor's steps all reach the learner's store, the learner learns from them, and the actor
acts on published weights."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from robot_rl import cli
from robot_rl.data.episodes import load_episodes
from robot_rl.runtime.distributed import Actor, DistributedConfig, Learner
from robot_rl.transport.learner_link import LinkEndpoints
from robot_rl.transport.security import SecurityConfig
from tests.netutil import free_port
from tests.runtime.test_train import tiny

pytestmark = pytest.mark.timeout(180)


def test_actor_and_learner_in_one_process_over_zmq(tmp_path: Path) -> None:
    train = tiny(tmp_path, demos=1, learning_starts=5)
    ep = LinkEndpoints(f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}")
    net = DistributedConfig(ep, SecurityConfig(plaintext=True), weights_period_s=0.2)
    learner = Learner(train, net)
    stop = threading.Event()
    thread = threading.Thread(target=learner.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    actor = Actor(train, net, tmp_path / "spool")
    other = Actor(train, dataclasses.replace(net, actor_id="actor-1"), tmp_path / "spool-1")
    try:
        stats = actor.run(37)  # ends mid-episode; the second actor's steps come in between
        other.run(20)
        stats = actor.run(8)
        assert actor.close(flush_timeout_s=20.0), "the learner did not store every step"
        assert other.close(flush_timeout_s=20.0)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert learner.steps_received == 65
    assert learner.updates > 0
    assert stats["weights_version"] >= 0, "the actor never received weights"
    episodes = list(load_episodes(tmp_path / "tiny" / "episodes"))
    steps = {a: sum(len(e.transitions) for e in episodes if e.meta["actor_id"] == a)
             for a in ("actor-0", "actor-1")}  # fmt: skip
    assert steps == {"actor-0": 45, "actor-1": 20}  # finished and stopped episodes, all durable
    assert (tmp_path / "tiny" / "checkpoints" / "latest.pt").is_file()


@pytest.mark.integration
def test_learner_and_actor_processes_with_curve_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert cli.main(["keys", "generate", "--dir", str(keys), "--name", "learner"]) == 0
    assert cli.main(["keys", "generate", "--dir", str(keys), "--name", "actor-7"]) == 0
    (keys / "allowed").mkdir()
    (keys / "allowed" / "actor-7.key").write_bytes((keys / "actor-7.key").read_bytes())
    flags = [
        "--transitions", f"tcp://127.0.0.1:{free_port()}", "--weights",
        f"tcp://127.0.0.1:{free_port()}", "--keys", str(keys),
        "--set", f"run_dir={tmp_path}", "--set", "name=dist", "--set", "env.task=reach",
        "--set", "env.obs=state", "--set", "env.max_episode_steps=10", "--set", "demos=1",
        "--set", "batch_size=16", "--set", "learning_starts=5",
        "--set", "agent.hidden_dims=[32, 32]",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    learner = subprocess.Popen(
        [sys.executable, "-m", "robot_rl.cli", "learner", *flags, "--duration", "60"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        actor = subprocess.run(
            [sys.executable, "-m", "robot_rl.cli", "actor", *flags, "--actor-id", "actor-7",
             "--steps", "30", "--spool", str(tmp_path / "spool")],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert actor.returncode == 0, actor.stdout + actor.stderr
        assert "still held" not in actor.stdout
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stored = list(load_episodes(tmp_path / "dist" / "episodes"))
            if sum(len(e.transitions) for e in stored) == 30:
                break
            time.sleep(0.2)
        assert sum(len(e.transitions) for e in stored) == 30
        assert all(e.meta["actor_id"] == "actor-7" for e in stored)
    finally:
        learner.terminate()
        learner.wait(timeout=30)
