"""``robot-rl record`` (demos from the scripted expert or an operator) and ``robot-rl demo`` (the
twin's scripted experts solving its tasks)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from robot_rl.cli.errors import CliError
from robot_rl.cli.flags import add_config_flags, at_least, check_console_port, given, load
from robot_rl.endpoints import DEFAULT_ENDPOINTS

TELEOP_DEVICES = ("spacemouse", "gamepad", "console")


def add(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo", help="solve the twin's tasks with the scripted experts and report what happened"
    )
    demo.add_argument("--task", default="all", help="a task name, or all (default)")
    demo.add_argument("--seed", type=int, default=0, help="first episode seed (default 0)")
    demo.add_argument("--episodes", type=int, default=2, help="episodes per task (default 2)")
    demo.set_defaults(handler=run_demo)

    parser = subparsers.add_parser("record", help="record demos (scripted expert or teleop)")
    parser.add_argument("--task", help="task name (required without --config; else env.task)")
    add_config_flags(parser, "TrainConfig (its env, teleop and console: a robot is env.remote)")
    parser.add_argument("--episodes", type=int, default=20, help="successful episodes to record")
    parser.add_argument("--obs", choices=("pixels", "state"), help="observations (env.obs)")
    parser.add_argument("--out", type=Path, help="directory (default runs/demos/<task>-<obs>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teleop", choices=("scripted", *TELEOP_DEVICES), default="scripted",
                        help="who drives: the scripted expert (default), a SpaceMouse, a "
                        "gamepad, or the console page (keys, browser gamepad)")  # fmt: skip
    add_operator_flags(parser)
    parser.set_defaults(handler=run_record)


def run_demo(args: argparse.Namespace) -> int:
    from robot_rl.demo import run_demo as solve  # lazily: it pulls in the twin and the tasks

    at_least("episodes", args.episodes, 1)
    return int(solve(args.task, args.seed, args.episodes))


def add_operator_flags(parser: argparse.ArgumentParser) -> None:
    """``--console-port`` and ``--select``: console.port and teleop.select of the config."""
    parser.add_argument("--console-port", type=int, help="console page port (console.port; "
                        f"default {DEFAULT_ENDPOINTS.console_port})")  # fmt: skip
    parser.add_argument("--select", help="which teleop device: a serial, path or index "
                        "(teleop.select)")  # fmt: skip


def session_config(args: argparse.Namespace, **env_fields: Any) -> Any:
    """The TrainConfig of ``--config`` and ``--set`` (or the defaults), with the env fields that
    flags set (not None) on top."""
    from robot_rl.runtime.config import TrainConfig

    train = load(TrainConfig, args.config, list(args.set))
    try:
        return dataclasses.replace(train, env=dataclasses.replace(train.env, **given(**env_fields)))
    except ValueError as exc:
        raise CliError(str(exc)) from None


def make(config: Any) -> Any:
    """The env for ``config``; a bad one (unknown task, missing model) is a CliError."""
    from robot_rl.envs.twin_env import make_env

    try:
        return make_env(config)
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from None


def operator_configs(train: Any, args: argparse.Namespace, console: bool) -> tuple[Any, Any]:
    """(TeleopConfig, ConsoleConfig): ``train``'s, with the device ``--teleop``, ``--select`` and
    ``--console-port`` on top; the page is on when ``console`` or ``train`` asks for it."""
    teleop = dataclasses.replace(train.teleop, device=args.teleop, **given(select=args.select))
    page = dataclasses.replace(train.console, enabled=console or train.console.enabled,
                               **given(port=args.console_port))  # fmt: skip
    return teleop, page


def operator(env: Any, train: Any, args: argparse.Namespace, console: bool,
             cameras: list[str]) -> Any:  # fmt: skip
    """The operator around ``env`` (``console.bridge.OperatorSetup``, see ``operator_configs``);
    a device that is not plugged in is a CliError."""
    from robot_rl.console.bridge import operator_setup
    from robot_rl.teleop_command import DeviceNotFoundError

    teleop, page = operator_configs(train, args, console)
    check_console_port(page, "--console-port PORT")
    try:
        return operator_setup(env, page, teleop, None, cameras)
    except DeviceNotFoundError as exc:
        raise CliError(str(exc)) from None


def run_record(args: argparse.Namespace) -> int:
    from robot_rl.runtime.record import record_demos, record_teleop_demos

    at_least("episodes", args.episodes, 1)
    if args.task is None and args.config is None:
        raise CliError("record needs --task NAME or --config FILE (whose env.task is used)")
    train = session_config(args, task=args.task, obs=args.obs)
    config = train.env
    if config.remote is not None and args.teleop == "scripted":
        raise CliError("the scripted expert drives only the twin; on a robot (env.remote) pass "
                       f"--teleop {' | '.join(TELEOP_DEVICES)}")  # fmt: skip
    env = make(config)
    out = args.out or Path("runs") / "demos" / f"{config.task}-{config.obs}"
    if args.teleop == "scripted":
        paths = record_demos(env, args.episodes, out, seed=args.seed)
        print(f"recorded {len(paths)} episodes into {out}")
        return 0
    cameras = list(config.cameras) if config.obs == "pixels" else []
    setup = operator(env, train, args, args.teleop == "console", cameras)
    print("drive the arm; mark each episode on the console (y success, n failure) or let the "
          "task's success end it; only successful episodes are kept. Ctrl-C stops.")  # fmt: skip
    try:
        paths = record_teleop_demos(env, setup.bridge.operator.device, setup.bridge.operator.config,
                                    args.episodes, out, args.seed, hub=setup.hub)  # fmt: skip
    except KeyboardInterrupt:
        paths = sorted(out.glob("episode_*.npz"))
    finally:
        setup.close()
    print(f"recorded {len(paths)} episodes into {out}")
    return 0
