"""``robot-rl train`` (a sim training session) and ``robot-rl eval`` (a checkpoint over seeded
episodes)."""

from __future__ import annotations

import argparse
from pathlib import Path

from robot_rl.bench.report import print_table
from robot_rl.cli.errors import CliError
from robot_rl.cli.flags import add_config_flags, at_least, check_console_port


def add(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="run a sim training session (SAC/RLPD with demos and interventions)"
    )
    parser.add_argument("--task", help="task name (sets env.task)")
    parser.add_argument("--obs", choices=("pixels", "state"), help="observation mode (env.obs)")
    parser.add_argument("--steps", type=int, help="env steps to train for (env_steps)")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--name", help="run name under runs/ (default <task>-<obs>-<seed>)")
    add_config_flags(parser, "TrainConfig")
    parser.add_argument("--resume", action="store_true", help="continue the run in its directory")
    parser.set_defaults(handler=run_train)

    evaluate = subparsers.add_parser("eval", help="evaluate a checkpoint over seeded episodes")
    evaluate.add_argument("--checkpoint", type=Path, required=True, help="checkpoints/latest.pt")
    evaluate.add_argument("--episodes", type=int, default=20, help="episodes (default 20)")
    evaluate.add_argument("--seed", type=int, default=100_000, help="first episode seed")
    evaluate.set_defaults(handler=run_eval)


def run_train(args: argparse.Namespace) -> int:
    from robot_rl.config import ConfigError, load_config
    from robot_rl.runtime.config import TrainConfig
    from robot_rl.runtime.train import TrainingSession, resume_config

    overrides = list(args.set)
    for flag, key in (("task", "env.task"), ("obs", "env.obs"), ("steps", "env_steps"),
                      ("seed", "seed"), ("name", "name")):  # fmt: skip
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    try:
        config = load_config(TrainConfig, args.config, overrides)
        if args.resume:  # the run's own config, where the run is now; the step budget may grow
            config = resume_config(config.run_path, args.steps or None)
        check_console_port(config.console)  # before the demos: a busy port fails at once
        session = TrainingSession(config, resume=args.resume)
    except (ConfigError, FileNotFoundError, FileExistsError) as exc:
        raise CliError(str(exc)) from None
    result = session.run()
    print(f"final evaluation: {result}")
    print(f"run directory: {session.dir}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from robot_rl.agents.checkpoint import CheckpointError, load_checkpoint
    from robot_rl.agents.sac import SACAgent
    from robot_rl.config import ConfigError
    from robot_rl.envs.twin_env import make_env
    from robot_rl.runtime.train import evaluate_policy, load_train_config

    if not args.checkpoint.is_file():
        raise CliError(f"checkpoint {args.checkpoint} not found; pass runs/<name>/checkpoints/...")
    at_least("episodes", args.episodes, 1)
    try:
        config = load_train_config(args.checkpoint.parent.parent)
        env = make_env(config.env)
        agent = SACAgent(env.observation_space, env.action_space, config.agent, config.seed)
        load_checkpoint(args.checkpoint, agent)
    except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from None
    result = evaluate_policy(agent, env, args.episodes, args.seed)
    print_table(result, title=f"eval {args.checkpoint}")
    return 0
