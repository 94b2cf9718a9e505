"""``robot-rl bc``: behaviour cloning on a training config's demos, then a seeded evaluation.

The baseline HIL-SERL compares RL against: the same env, demos (``demos: N`` scripted expert
episodes recorded into ``runs/<name>/demos``, or ``--demos-dir`` with recorded or imported ones)
and encoder (``agent:`` fields) as ``robot-rl train``, fitted by ``robot_rl.agents.bc.BCAgent``.
Writes ``runs/<name>/bc.pt`` and ``runs/<name>/bc_eval.json``; ``--checkpoint`` evaluates a saved
one without training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from robot_rl.cli.errors import CliError
from robot_rl.cli.flags import add_config_flags, at_least


def add(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bc", help="behaviour cloning baseline on a config's demos")
    add_config_flags(parser, "TrainConfig")
    parser.add_argument("--updates", type=int, default=2_000, help="Adam steps (default 2000)")
    parser.add_argument("--batch-size", type=int, default=256, help="samples per step")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes")
    parser.add_argument("--demos-dir", type=Path,
                        help="episodes to clone (default: record the config's demos)")  # fmt: skip
    parser.add_argument("--checkpoint", type=Path, help="evaluate this bc.pt; no training")
    parser.set_defaults(handler=run_bc_command)


def run_bc_command(args: argparse.Namespace) -> int:
    from robot_rl.bench.report import print_table
    from robot_rl.config import ConfigError, load_config
    from robot_rl.runtime.train import TrainConfig

    at_least("updates", args.updates, 1)
    at_least("batch-size", args.batch_size, 1)
    at_least("episodes", args.episodes, 1)
    try:
        config = load_config(TrainConfig, args.config, list(args.set))
        result = run_bc(config, args.updates, args.batch_size, args.episodes, args.demos_dir,
                        args.checkpoint)  # fmt: skip
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print_table(result, title=f"bc {config.env.task} ({config.env.obs})")
    return 0


def run_bc(
    config: Any,
    updates: int,
    batch_size: int,
    episodes: int,
    demos_dir: Path | None = None,
    checkpoint: Path | None = None,
) -> dict[str, float]:
    """Fit (unless ``checkpoint``) and evaluate a BC policy for a ``TrainConfig``; the figures."""
    import time

    from robot_rl.agents.bc import BCAgent
    from robot_rl.data.episodes import load_episodes
    from robot_rl.data.replay import ReplayBuffer
    from robot_rl.envs.twin_env import make_env
    from robot_rl.runtime.record import record_demos
    from robot_rl.runtime.train import evaluate_policy

    out = config.run_path
    out.mkdir(parents=True, exist_ok=True)
    env = make_env(config.env)
    agent = BCAgent(env.observation_space, env.action_space, config.agent, config.seed)
    result: dict[str, float] = {}
    if checkpoint is not None:
        if not checkpoint.is_file():
            raise FileNotFoundError(f"BC checkpoint {checkpoint} not found")
        agent.load(checkpoint)
    else:
        if demos_dir is None:
            demos_dir = out / "demos"
            if not any(demos_dir.glob("*.npz")):
                if config.demos < 1:
                    raise ValueError("demos=0 and no --demos-dir: nothing to clone")
                record_demos(env, config.demos, demos_dir, seed=config.seed + 10_000)
        if not demos_dir.is_dir():
            raise FileNotFoundError(f"demo folder {demos_dir} not found")
        demos = ReplayBuffer(config.replay_capacity, config.agent.discount, seed=config.seed)
        for episode in load_episodes(demos_dir):
            for step in episode.transitions:
                demos.add(step)
            demos.close_episode()
        start = time.perf_counter()
        losses = agent.fit(demos, updates, batch_size)
        result.update(fit_s=time.perf_counter() - start, demo_steps=float(len(demos)),
                      updates=float(updates), final_mse=losses[-1]["mse"])  # fmt: skip
        agent.save(out / "bc.pt")
    result.update(evaluate_policy(agent, env, episodes, seed=config.seed + 50_000))
    (out / "bc_eval.json").write_text(json.dumps(result, indent=1))
    return result
