"""``robot-rl learner`` and ``robot-rl actor``: the two halves of distributed training."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from robot_rl.cli.errors import CliError
from robot_rl.cli.flags import add_config_flags, add_key_flags, load


def add(subparsers: argparse._SubParsersAction) -> None:
    learner = subparsers.add_parser("learner", help="run the learner process (actors connect)")
    _add_network_flags(learner, "learner")
    learner.add_argument("--duration", type=float, help="stop after this many seconds")
    learner.add_argument("--resume", action="store_true", help="load checkpoints/latest.pt")
    learner.set_defaults(handler=run_learner)

    actor = subparsers.add_parser("actor", help="run an actor process against a learner")
    _add_network_flags(actor, None)
    actor.add_argument("--actor-id", default="actor-0", help="unique per actor")
    actor.add_argument("--steps", type=int, default=1_000_000, help="env steps to act")
    actor.add_argument("--spool", type=Path, help="held transitions (default runs/spool/ID)")
    actor.add_argument("--seed", type=int, default=0)
    actor.set_defaults(handler=run_actor)


def _add_network_flags(parser: argparse.ArgumentParser, key: str | None) -> None:
    add_config_flags(parser, "TrainConfig")
    parser.add_argument("--transitions", default="tcp://127.0.0.1:5555",
                        help="transitions endpoint (learner binds, actors connect)")  # fmt: skip
    parser.add_argument("--weights", default="tcp://127.0.0.1:5556", help="weights endpoint")
    add_key_flags(parser, key)
    parser.add_argument("--server-key", default="learner", help="the learner's key name")


def _network_configs(args: argparse.Namespace, key: str, actor_id: str = "actor-0") -> Any:
    from robot_rl.runtime.distributed import DistributedConfig
    from robot_rl.runtime.train import TrainConfig
    from robot_rl.transport.learner_link import LinkEndpoints
    from robot_rl.transport.security import SecurityConfig

    train = load(TrainConfig, args.config, list(args.set))
    security = SecurityConfig(keys_dir=args.keys, name=args.key or key,
                              server_name=args.server_key, plaintext=args.plaintext)  # fmt: skip
    net = DistributedConfig(LinkEndpoints(args.transitions, args.weights), security, actor_id)
    return train, net


def run_learner(args: argparse.Namespace) -> int:
    from robot_rl.runtime.distributed import Learner
    from robot_rl.transport.security import SecurityError

    train, net = _network_configs(args, "learner")
    try:
        learner = Learner(train, net, resume=args.resume)
    except SecurityError as exc:
        raise CliError(str(exc)) from None
    learner.run(args.duration)
    print(f"learner: {learner.updates} updates on {learner.steps_received} received steps")
    return 0


def run_actor(args: argparse.Namespace) -> int:
    from robot_rl.runtime.distributed import Actor
    from robot_rl.transport.security import SecurityError

    train, net = _network_configs(args, args.actor_id, args.actor_id)
    spool = args.spool or Path("runs") / "spool" / args.actor_id
    try:
        actor = Actor(train, net, spool)
    except (SecurityError, ValueError) as exc:
        raise CliError(str(exc)) from None
    stats = actor.run(args.steps, args.seed)
    delivered = actor.close()
    print(f"actor {args.actor_id}: {stats}")
    if not delivered:
        print(f"actor {args.actor_id}: some steps are still held in {spool}; they go out next run")
    return 0
