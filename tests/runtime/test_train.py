"""Training sessions: the run directory, the update-to-data ratio, determinism, resume, learning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robot_rl.agents.config import SACConfig
from robot_rl.data.episodes import load_episodes
from robot_rl.envs.twin_env import TwinEnvConfig
from robot_rl.runtime.train import TrainConfig, TrainingSession


def tiny(tmp_path: Path, **changes) -> TrainConfig:
    """A reach-from-state session small enough for a few seconds of CPU."""
    fields = dict(
        env=TwinEnvConfig(task="reach", obs="state", max_episode_steps=15),
        agent=SACConfig(utd_ratio=2, hidden_dims=(32, 32)),
        env_steps=40,
        demos=1,
        learning_starts=10,
        batch_size=16,
        eval_every=20,
        eval_episodes=1,
        checkpoint_every=20,
        run_dir=str(tmp_path),
        name="tiny",
    )
    fields.update(changes)
    return TrainConfig(**fields)


def params(session: TrainingSession) -> list[torch.Tensor]:
    agent = session.agent
    modules = (agent.encoder, agent.actor, agent.critic)
    return [p.detach().clone() for m in modules for p in m.parameters()]


def test_a_session_fills_its_run_directory_and_holds_the_utd(tmp_path: Path) -> None:
    session = TrainingSession(tiny(tmp_path))
    before = params(session)
    final = session.run()
    run = tmp_path / "tiny"
    for name in ("config.yaml", "checkpoints/latest.pt", "eval.jsonl", "learning_curve.png"):
        assert (run / name).is_file(), f"{name} missing from the run directory"
    assert list((run / "tb").iterdir()), "no TensorBoard events written"
    assert session.counters.env_steps == 40
    # Updates never run ahead of the data: at most one learner step per online step past the start.
    assert 0 < session.counters.updates <= 40 - 10
    assert any(not torch.equal(a, b) for a, b in zip(before, params(session), strict=True))
    # Every step taken is on disk: the finished episodes, and the one open at the end (stored as
    # unfinished), each once.
    episodes = list(load_episodes(run / "episodes"))
    assert sum(len(e.transitions) for e in episodes) == 40
    assert len(episodes) - session.counters.episodes in (0, 1)
    assert [e.meta["first_seq"] for e in episodes] == sorted(e.meta["first_seq"] for e in episodes)
    evals = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    # Periodic at 20 and 40; the final evaluation is the one at 40, not run twice.
    assert [e["env_steps"] for e in evals] == [20.0, 40.0]
    assert final == evals[-1]
    # One evaluation episode, as asked, under a sparse reward that ends the episode on success:
    # success is all or nothing, the return is 1 exactly when it succeeded, and a failed episode
    # runs to the time limit.
    assert final["episodes"] == 1.0 and final["success_rate"] in (0.0, 1.0)
    assert final["return"] == final["success_rate"]
    assert final["success_rate"] == 1.0 or final["episode_steps"] == 15.0
    assert evals[-1]["success_rate"] == final["success_rate"]


@pytest.mark.integration
def test_in_step_mode_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        session = TrainingSession(tiny(tmp_path, concurrent=False, name=name, eval_every=0))
        session.run()
        runs.append(params(session))
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_an_existing_run_is_not_overwritten_and_resume_needs_a_checkpoint(tmp_path: Path) -> None:
    TrainingSession(tiny(tmp_path, env_steps=20, concurrent=False)).run()
    with pytest.raises(FileExistsError, match="--resume"):
        TrainingSession(tiny(tmp_path))
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        TrainingSession(tiny(tmp_path, name="never-ran"), resume=True)


@pytest.mark.integration
def test_resume_restores_weights_counters_and_replay(tmp_path: Path) -> None:
    first = TrainingSession(tiny(tmp_path, env_steps=30, concurrent=False))
    first.run()
    resumed = TrainingSession(tiny(tmp_path, env_steps=50, concurrent=False), resume=True)
    for a, b in zip(params(first), params(resumed), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert vars(resumed.counters) == vars(first.counters)
    run = tmp_path / "tiny"
    online = [t for e in load_episodes(run / "episodes") for t in e.transitions]
    demos = [t for e in load_episodes(run / "demos") for t in e.transitions]
    assert len(resumed.online) == len(online)  # every step of every finished episode
    # Demo steps, plus every intervention step, which goes into both buffers.
    assert len(resumed.demo) == len(demos) + sum(t.intervened for t in online)
    resumed.run()
    assert resumed.counters.env_steps == 50
    assert resumed.counters.updates > first.counters.updates


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_reach_from_state_learns_to_80_percent(tmp_path: Path) -> None:
    """The learning correctness test: the benchmark's fixed budget (2k env steps), success by
    deterministic evaluation on 20 seeded episodes. About 7 minutes on 2 cores."""
    from robot_rl.bench.learning import run_learning_bench

    result = run_learning_bench(seed=0, task="reach", obs="state", run_dir=str(tmp_path))
    assert result["env_steps"] == 2_000
    assert result["success_rate"] >= 0.8, result
    assert np.isfinite(result["eval_return"])


CONFIGS = Path(__file__).resolve().parents[2] / "robot_rl" / "configs"


@pytest.mark.parametrize(
    "path",
    sorted(
        p
        for p in CONFIGS.glob("*.yaml")  # training configs: not sessions, not rig files
        if not p.name.startswith("session_") and "_rig" not in p.stem
    ),
    ids=lambda p: p.name,
)
def test_shipped_configs_load(path: Path) -> None:
    from robot_rl.config import load_config

    config = load_config(TrainConfig, path)
    assert config.env.task in path.stem
