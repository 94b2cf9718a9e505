"""The ``robot-rl`` command line: ``robot-rl bench control --json out.json``, ``robot-rl demo``.

One module per command group; each has ``add(subparsers)``, which adds its parsers and sets
``handler`` on them. A new group is a module ``robot_rl/cli/<name>.py`` listed in ``COMMANDS``.
Command modules import the library lazily, inside their handlers, so ``--help`` stays fast and
works whatever optional parts are missing. Loops and workflows live in the library, not here.

Usage errors (unknown bench, unwritable path, bad arguments) are logged once and give exit code 2;
the CLI routes log records to stderr as plain lines (``robot-rl: error: ...``, no logger names).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from robot_rl.cli.bench import BENCHES, load_bench
from robot_rl.cli.errors import USAGE_ERROR, CliError, Parser

__all__ = ["BENCHES", "USAGE_ERROR", "CliError", "build_parser", "load_bench", "main"]

log = logging.getLogger(__name__)

# The command groups, in the order ``robot-rl --help`` lists them: robot_rl.cli.<name>.add.
COMMANDS: tuple[str, ...] = (
    "bench", "record", "train", "keys", "cameras", "distributed", "robot", "reward", "session",
    "franka",  # doctor, robot capture-pose (the robot-server's Franka backend is run from there)
    "data", "view",  # LeRobotDataset export/import; episodes in rerun
    "bc",  # behaviour-cloning baseline on a config's demos
)  # fmt: skip


class PlainFormatter(logging.Formatter):
    """``robot-rl: error: message``: what a user reads, without logger names; INFO lines (``-v``)
    carry no level."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno <= logging.INFO:
            return f"robot-rl: {message}"
        return f"robot-rl: {record.levelname.lower()}: {message}"


def _configure_logging() -> bool:
    """Send log records to stderr, unless the caller (an app, pytest) has set up logging already."""
    if logging.getLogger().handlers:
        return False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PlainFormatter("%(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    return True


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command group in ``COMMANDS``."""
    parser = Parser(
        prog="robot-rl",
        description="Human-in-the-loop RL for robot arms, with a PyBullet twin of a Panda.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"robot_rl.cli.{name}").add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 usage error, else the subcommand's code)."""
    owns_logging = _configure_logging()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version exit through argparse
        return exc.code if isinstance(exc.code, int) else 0
    except CliError as exc:
        log.error("%s", exc)
        return USAGE_ERROR
    if owns_logging and args.verbose:
        logging.getLogger().setLevel(logging.INFO)
    try:
        return args.handler(args)
    except CliError as exc:
        log.error("%s", exc)
        return USAGE_ERROR
