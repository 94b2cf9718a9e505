"""``robot-rl learner`` and ``robot-rl actor``: the two halves of distributed training."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from robot_rl.cli.errors import CliError
from robot_rl.cli.flags import (
    add_config_flags,
    check_console_port,
    check_endpoint_port,
    given,
    load,
)
from robot_rl.endpoints import DEFAULT_ENDPOINTS


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
    actor.add_argument("--spool", type=Path, help="held transitions (default <run>/spool/ID)")
    actor.add_argument("--seed", type=int, default=0)
    actor.set_defaults(handler=run_actor)


def _add_network_flags(parser: argparse.ArgumentParser, key: str | None) -> None:
    add_config_flags(parser, "TrainConfig")
    parser.add_argument("--net", type=Path, metavar="FILE", help="YAML file with DistributedConfig "
                        "fields (endpoints, security, weights_period_s, checkpoint_period_s, "
                        "status_period_s, weights_half)")  # fmt: skip
    parser.add_argument("--net-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a DistributedConfig field, e.g. --net-set "
                        "weights_period_s=1 (repeatable)")  # fmt: skip
    # These flags win over --net and --net-set.
    parser.add_argument("--transitions", help="learner binds, actors connect "
                        f"(endpoints.transitions; {DEFAULT_ENDPOINTS.transitions})")  # fmt: skip
    parser.add_argument("--weights", help="weights endpoint (endpoints.weights; "
                        f"{DEFAULT_ENDPOINTS.weights})")  # fmt: skip
    parser.add_argument("--keys", help="CURVE keys folder (security.keys_dir; keys)")
    parser.add_argument("--key", help="this process's key name (security.name; default "
                        f"{key or 'the actor id'})")  # fmt: skip
    parser.add_argument("--server-key", help="the learner's key name (security.server_name)")
    parser.add_argument("--plaintext", action="store_true",
                        help="no CURVE (refused unless every endpoint is loopback)")  # fmt: skip


def network_configs(args: argparse.Namespace, key: str, actor_id: str | None = None) -> Any:
    """(TrainConfig, DistributedConfig) from the files, the ``--set`` overrides and the flags;
    the process's key name defaults to ``key``."""
    from robot_rl.runtime.config import TrainConfig
    from robot_rl.runtime.distributed import DistributedConfig

    train = load(TrainConfig, args.config, list(args.set))
    net = load(DistributedConfig, args.net, list(args.net_set))
    endpoints = given(transitions=args.transitions, weights=args.weights)
    security = given(keys_dir=args.keys, name=args.key or net.security.name or key,
                      server_name=args.server_key, plaintext=args.plaintext or None)  # fmt: skip
    net = dataclasses.replace(
        net, endpoints=dataclasses.replace(net.endpoints, **endpoints),
        security=dataclasses.replace(net.security, **security), **given(actor_id=actor_id),
    )  # fmt: skip
    return train, net


def run_learner(args: argparse.Namespace) -> int:
    from robot_rl.runtime.distributed import Learner
    from robot_rl.transport.security import SecurityError

    train, net = network_configs(args, "learner")
    for flag, endpoint in (("transitions", net.endpoints.transitions),
                           ("weights", net.endpoints.weights)):  # fmt: skip
        check_endpoint_port(endpoint, f"the learner's {flag} endpoint",
                            f"--{flag} tcp://HOST:PORT (the actors pass the same)")  # fmt: skip
    try:
        learner = Learner(train, net, resume=args.resume)
    except (SecurityError, FileExistsError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from None
    learner.run(args.duration)
    print(f"learner: {learner.updates} updates on {learner.steps_received} received steps")
    return 0


def run_actor(args: argparse.Namespace) -> int:
    from robot_rl.runtime.distributed import Actor
    from robot_rl.transport.security import SecurityError

    train, net = network_configs(args, args.actor_id, args.actor_id)
    check_console_port(train.console)
    try:
        actor = Actor(train, net, args.spool)  # default: inside the run, <run>/spool/<actor id>
    except (SecurityError, ValueError) as exc:
        raise CliError(str(exc)) from None
    stats = actor.run(args.steps, args.seed)
    delivered = actor.close()
    print(f"actor {args.actor_id}: {stats}")
    if not delivered:
        print(f"actor {args.actor_id}: some steps are still held in {actor.spool_dir}; they go "
              "out next run")  # fmt: skip
    return 0
