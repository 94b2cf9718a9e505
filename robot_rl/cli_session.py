"""``robot-rl session start CONFIG``: a whole training session with one command (see
``robot_rl.runtime.session``). Kept apart from ``robot_rl.cli`` so that file stays readable."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_session(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("session", help="start a whole training session")
    actions = parser.add_subparsers(dest="session_command", metavar="ACTION", required=True)
    start = actions.add_parser("start", help="robot server, learner, actor and console")
    start.add_argument("config", type=Path, help="session YAML (robot_rl/configs/session_*.yaml)")
    start.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a SessionConfig field (repeatable)")  # fmt: skip
    start.add_argument("--duration", type=float, help="stop after this many seconds")
    start.set_defaults(handler=run_session_start)


def run_session_start(args: argparse.Namespace) -> int:
    from robot_rl.cli import CliError
    from robot_rl.config import ConfigError
    from robot_rl.runtime.session import SessionError, load_session

    try:
        session = load_session(args.config, args.set)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    print(f"session: logs in {session.dir}; Ctrl-C stops everything cleanly", flush=True)
    code = 0
    try:
        session.start()
        if session.console_url:
            print(f"session: operator console at {session.console_url}", flush=True)
        print("session: all parts are up", flush=True)
        session.watch(args.duration)
    except SessionError as exc:
        print(f"session: {exc}", flush=True)
        code = 1
    except KeyboardInterrupt:
        print("session: stopping (Ctrl-C)", flush=True)
    finally:
        codes = session.stop()
        print(f"session: stopped; exit codes {codes}", flush=True)
    return code
