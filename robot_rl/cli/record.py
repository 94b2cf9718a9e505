"""``robot-rl record`` (demos from the scripted expert or an operator) and ``robot-rl demo`` (the
twin's scripted experts solving its tasks)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from robot_rl.cli.errors import CliError
from robot_rl.cli.flags import at_least, load
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
    parser.add_argument("--config", type=Path, help="training config whose env to record on "
                        "(a robot: env.remote); --task and --obs override it")  # fmt: skip
    parser.add_argument("--episodes", type=int, default=20, help="successful episodes to record")
    parser.add_argument("--obs", choices=("pixels", "state"), help="observations (default pixels)")
    parser.add_argument("--out", type=Path, help="directory (default runs/demos/<task>-<obs>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teleop", choices=("scripted", *TELEOP_DEVICES), default="scripted",
                        help="who drives: the scripted expert (default), a SpaceMouse, a "
                        "gamepad, or the console page (keys, browser gamepad)")  # fmt: skip
    parser.add_argument("--console-port", type=int, default=DEFAULT_ENDPOINTS.console_port,
                        help="console page port")  # fmt: skip
    parser.add_argument("--select", default="", help="which teleop device (serial, path, index)")
    parser.set_defaults(handler=run_record)


def run_demo(args: argparse.Namespace) -> int:
    from robot_rl.demo import run_demo as solve  # lazily: it pulls in the twin and the tasks

    at_least("episodes", args.episodes, 1)
    return int(solve(args.task, args.seed, args.episodes))


def env_config(config: Path | None, **fields: Any) -> Any:
    """The env config of training config ``config`` (or the twin's defaults), with ``fields`` that
    are not None set on top."""
    from robot_rl.envs.twin_env import TwinEnvConfig
    from robot_rl.runtime.train import TrainConfig

    base = load(TrainConfig, config, []).env if config else None
    chosen = {key: value for key, value in fields.items() if value is not None}
    try:
        return dataclasses.replace(base, **chosen) if base else TwinEnvConfig(**chosen)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def make(config: Any) -> Any:
    """The env for ``config``; a bad one (unknown task, missing model) is a CliError."""
    from robot_rl.envs.twin_env import make_env

    try:
        return make_env(config)
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from None


def operator(env: Any, device: str, console_port: int | None, cameras: list[str],
             select: str = "") -> Any:  # fmt: skip
    """The operator's teleop device around ``env`` (``console.bridge.OperatorSetup``), with the
    console page on ``console_port`` unless it is None; a device not plugged in is a CliError."""
    from robot_rl.console.bridge import operator_setup
    from robot_rl.console.server import ConsoleConfig
    from robot_rl.teleop_command import DeviceNotFoundError, TeleopConfig

    teleop = TeleopConfig(device=device, select=select)
    console = ConsoleConfig(enabled=console_port is not None, port=console_port or 0)
    try:
        return operator_setup(env, console, teleop, None, cameras)
    except DeviceNotFoundError as exc:
        raise CliError(str(exc)) from None


def run_record(args: argparse.Namespace) -> int:
    from robot_rl.runtime.record import record_demos, record_teleop_demos

    at_least("episodes", args.episodes, 1)
    if args.task is None and args.config is None:
        raise CliError("record needs --task NAME or --config FILE (whose env.task is used)")
    config = env_config(args.config, task=args.task, obs=args.obs or (None if args.config
                                                                     else "pixels"))  # fmt: skip
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
    port = args.console_port if args.teleop == "console" else None
    setup = operator(env, args.teleop, port, cameras, args.select)
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
