"""``robot-rl robot-server``: the twin's controller loop served over ZMQ (targets in, state out)."""

from __future__ import annotations

import argparse

from robot_rl.cli.errors import CliError
from robot_rl.cli.flags import add_key_flags, add_robot_flags, check_task
from robot_rl.cli.franka import add_backend_flags


def add(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "robot-server", help="serve the twin's controller loop over ZMQ (targets in, state out)"
    )
    add_robot_flags(parser)
    add_backend_flags(parser)  # --backend franka|franka-sim, --robot-ip, --control, --rig
    add_key_flags(parser, "robot")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.backend != "twin":  # a real arm (or franky-sim): robot_rl.cli.franka
        from robot_rl.cli.franka import run_franka_server

        return run_franka_server(args)
    from robot_rl.sim.scene import SceneConfig, TwinScene
    from robot_rl.transport.robot_server import RobotEndpoints, RobotServer, SceneBackend
    from robot_rl.transport.security import SecurityConfig, SecurityError

    check_task(args.task)
    scene = TwinScene(SceneConfig(task=args.task, cameras=()))
    security = SecurityConfig(keys_dir=args.keys, name=args.key, plaintext=args.plaintext)
    try:
        server = RobotServer(
            SceneBackend(scene), RobotEndpoints(args.commands, args.state), security
        )
    except SecurityError as exc:
        scene.close()
        raise CliError(str(exc)) from None
    server.start()
    print(f"robot server: {args.task} twin on {server.commands_endpoint}, state on "
          f"{server.state_endpoint}; Ctrl-C stops")  # fmt: skip
    try:
        server.wait(args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        scene.close()
    print(f"robot server: {server.stats.ticks} ticks, {server.stats.targets} targets")
    return 0
