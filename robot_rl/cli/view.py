"""``robot-rl view EPISODE_OR_RUN``: recorded episodes in rerun, or saved as an .rrd file."""

from __future__ import annotations

import argparse
from pathlib import Path

from robot_rl.cli.errors import CliError


def add(subparsers: argparse._SubParsersAction) -> None:
    view = subparsers.add_parser(
        "view", help="show episodes in rerun: cameras, TCP path, actions, control, reward"
    )
    view.add_argument("target", type=Path,
                      help="an episode_*.npz, a folder of them, or a run directory")  # fmt: skip
    view.add_argument("--save", type=Path, help="write an .rrd file (open later: rerun FILE)")
    view.add_argument("--episode", type=int, action="append", default=[],
                      help="an episode number (repeatable; default the last --last)")  # fmt: skip
    view.add_argument("--last", type=int, default=20, help="show the last N episodes (20)")
    view.add_argument("--demos", action="store_true", help="a run's demos/ (default episodes/)")
    view.add_argument("--detector", help="success detector (classifier folder or probe JSON) "
                      "whose score to show; default the run's env.reward_model")  # fmt: skip
    view.set_defaults(handler=run_view)


def run_view(args: argparse.Namespace) -> int:
    from robot_rl.extras import MissingExtraError
    from robot_rl.runtime.view import view

    try:
        shown = view(args.target, save=args.save, episodes=args.episode, last=args.last,
                     demos=args.demos, detector=args.detector)  # fmt: skip
    except (MissingExtraError, FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from None
    where = f"saved to {args.save}" if args.save else "sent to the rerun viewer"
    print(f"{shown} episodes {where}")
    return 0
