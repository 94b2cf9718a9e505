"""``robot-rl session start CONFIG``: a whole training session with one command (see
``robot_rl.runtime.session``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from robot_rl.cli.errors import CliError


def add(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("session", help="start a whole training session")
    actions = parser.add_subparsers(dest="session_command", metavar="ACTION", required=True)
    start = actions.add_parser("start", help="robot server, learner, actor and console")
    start.add_argument("config", type=Path, help="session YAML (robot_rl/configs/session_*.yaml)")
    start.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a SessionConfig field (repeatable)")  # fmt: skip
    start.add_argument("--duration", type=float, help="stop after this many seconds")
    start.set_defaults(handler=run_start)


def run_start(args: argparse.Namespace) -> int:
    from robot_rl.config import ConfigError
    from robot_rl.runtime.session import load_session

    try:
        session = load_session(args.config, args.set)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    return session.run(args.duration)
