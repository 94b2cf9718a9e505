"""``robot-rl bench NAME [--json PATH]``.

Benchmarks are registered in ``BENCHES`` by name as "module:function" and imported only when run,
so ``--help`` stays fast and works whatever optional parts are missing. A benchmark function takes
``seed: int`` and ``quick: bool`` (and, if it declares them, ``task``, ``obs``, ``steps``,
``run_dir`` from the matching flags) and returns a flat dict of metrics.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
from collections.abc import Callable
from pathlib import Path

from robot_rl.bench.report import HostCpuWindow, print_table, write_json
from robot_rl.cli.errors import CliError

log = logging.getLogger("robot_rl.cli")

BenchFn = Callable[..., dict[str, float]]

# name -> "module:function"; the function is called as fn(seed=..., quick=...).
BENCHES: dict[str, str] = {
    "console": "robot_rl.bench.console:run_console_bench",
    "control": "robot_rl.bench.control:run_control_bench",
    "franka": "robot_rl.bench.franka:run_franka_bench",
    "learner": "robot_rl.bench.learner:run_learner_bench",
    "learning": "robot_rl.bench.learning:run_learning_bench",
    "reward": "robot_rl.bench.reward:run_reward_bench",
    "transport": "robot_rl.bench.transport:run_transport_bench",
}


def add(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark, print a table and optionally write flat JSON",
        description=f"Run a benchmark. Known benchmarks: {', '.join(BENCHES)}.",
    )
    parser.add_argument("name", help=f"which benchmark ({', '.join(BENCHES)})")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results here")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--quick", action="store_true", help="a much shorter run (for tests)")
    parser.add_argument("--task", help="task to train (learning)")
    parser.add_argument("--obs", choices=("state", "pixels"), help="observations (learning)")
    parser.add_argument("--steps", type=int, help="env step budget (learning)")
    parser.add_argument("--run-dir", help="keep the training run here (learning)")
    parser.add_argument("--seeds", type=int, help="seeds to run, from --seed on (learning)")
    parser.add_argument("--jobs", type=int,
                        help="seeds trained at once, each pinned to its share of the cores; "
                             "more than the cores share them, one torch thread each (learning; "
                             "default 1)")  # fmt: skip
    parser.add_argument("--set", action="append", dest="overrides", metavar="KEY=VALUE",
                        help="override a field of the task's config for an ablation, e.g. --set "
                             "demo_pretrain_updates=2000 (learning; repeatable)")  # fmt: skip
    parser.set_defaults(handler=run)


def load_bench(name: str) -> BenchFn:
    module_name, _, attr = BENCHES[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def check_writable(path: Path, flag: str = "--json") -> None:
    """Fail before a long run if ``path`` cannot be written (a folder, or no writable ancestor)."""
    if path.is_dir():
        raise CliError(f"{flag} {str(path)!r} is a folder; give a file path")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise CliError(
            f"{flag} {str(path)!r} cannot be written: {str(ancestor)!r} is not a writable folder"
        )


def write_report(path: Path | None, report: dict[str, float]) -> None:
    """Write ``report`` as flat JSON to ``path`` (if given); an unwritable path is a CliError."""
    if path is None:
        return
    try:
        write_json(path, report)
    except OSError as exc:
        raise CliError(f"could not write --json {str(path)!r}: {exc}") from exc
    log.info("wrote %s", path)


def run(args: argparse.Namespace) -> int:
    if args.name not in BENCHES:
        raise CliError(f"unknown bench {args.name!r}; known benches: {', '.join(sorted(BENCHES))}")
    if args.json is not None:  # checked before the (long) run, not after it
        check_writable(args.json)
    bench = load_bench(args.name)
    options = {
        key: value
        for key, value in (
            ("task", args.task),
            ("obs", args.obs),
            ("steps", args.steps),
            ("run_dir", args.run_dir),
            ("seeds", args.seeds),
            ("jobs", args.jobs),
            ("overrides", args.overrides),
        )
        if value is not None
    }
    accepted = inspect.signature(bench).parameters
    flags = {"overrides": "--set"}
    unknown = [
        flags.get(key, f"--{key.replace('_', '-')}") for key in options if key not in accepted
    ]
    if unknown:
        raise CliError(f"bench {args.name} takes no {', '.join(unknown)}")
    cpu = HostCpuWindow()
    try:
        results = bench(seed=args.seed, quick=args.quick, **options)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    results = {**results, **cpu.figures("_run")}  # the whole run's, beside any window's own
    print_table(
        results, title=f"bench {args.name} (seed {args.seed}{', quick' if args.quick else ''})"
    )
    write_report(args.json, results)
    return 0
