"""Real-arm commands: ``robot-rl doctor``, ``robot-rl robot capture-pose``, and the Franka side of
``robot-rl robot-server --backend franka|franka-sim`` (its flags are added by ``add_backend_flags``,
its run is ``run_franka_server``)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from pathlib import Path

from robot_rl.cli.errors import CliError


def add(subparsers: argparse._SubParsersAction) -> None:
    doctor = subparsers.add_parser(
        "doctor", help="check this machine for a real-arm session (one line per check)"
    )
    doctor.add_argument("--robot-ip", help="the arm's FCI address (checks that it answers)")
    doctor.add_argument("--keys", type=Path, default=Path("keys"), help="CURVE keys folder")
    doctor.add_argument("--key-names", nargs="+", default=["learner", "actor-0", "robot"],
                        help="keys a session needs (default learner actor-0 robot)")  # fmt: skip
    doctor.add_argument("--runs", type=Path, default=Path("runs"), help="where episodes go")
    doctor.add_argument("--min-free-gb", type=float, default=20.0, help="disk needed (GB)")
    doctor.add_argument("--jitter-s", type=float, default=3.0, help="seconds of 1 kHz loop")
    doctor.add_argument(
        "--rig", type=Path, help="rig YAML: also check that the arm reaches its workspace box"
    )
    doctor.set_defaults(handler=run_doctor)

    robot = subparsers.add_parser("robot", help="real-arm tools (capture-pose)")
    actions = robot.add_subparsers(dest="robot_command", metavar="ACTION", required=True)
    capture = actions.add_parser(
        "capture-pose", help="print the TCP pose and joints as YAML (workspace corner, reset pose)"
    )
    capture.add_argument("--robot-ip", required=True, help="the arm's FCI address")
    capture.set_defaults(handler=run_capture_pose)
    reach = actions.add_parser(
        "check-workspace",
        help="can the arm reach the whole workspace box with the tool at its nominal "
        "orientation? (offline: kinematics only, no arm needed)",
    )
    source = reach.add_mutually_exclusive_group(required=True)
    source.add_argument("--rig", type=Path, help="rig YAML (FrankaRig: franka, workspace, reset)")
    source.add_argument("--franka-sim", action="store_true",
                        help="franky-sim's rig (its box, the FR3, its home posture)")  # fmt: skip
    reach.set_defaults(handler=run_check_workspace)


def add_backend_flags(parser: argparse.ArgumentParser) -> None:
    """``robot-server`` flags for a real arm (the twin ignores them)."""
    parser.add_argument("--backend", choices=("twin", "franka", "franka-sim"), default="twin",
                        help="twin (default), a Franka through franky, or franky-sim started "
                        "here (a MuJoCo FR3 on loopback)")  # fmt: skip
    parser.add_argument("--robot-ip", help="the Franka's FCI address (overrides the rig file)")
    parser.add_argument("--control", choices=("torque", "tracker"),
                        help="torque: our 1 kHz law; tracker: franky's")  # fmt: skip
    parser.add_argument("--rig", type=Path, help="rig YAML (FrankaRig: franka, workspace, reset)")


def run_doctor(args: argparse.Namespace) -> int:
    from robot_rl.hardware.doctor import run_checks

    checks = run_checks(args.robot_ip, args.keys, args.key_names, args.runs, args.min_free_gb,
                        args.jitter_s, args.rig)  # fmt: skip
    for check in checks:
        print(check.line(), flush=True)
    failed = sum(not c.ok for c in checks)
    print(f"doctor: {len(checks) - failed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def run_capture_pose(args: argparse.Namespace) -> int:
    """Read one state (no motion, no settings changed) and print it as YAML."""
    import numpy as np

    from robot_rl.hardware.franka import (
        FrankaError,
        current_scheduling,
        fci_unreachable_message,
        load_franky,
        restore_scheduling,
    )

    policy = current_scheduling()
    try:
        franky = load_franky()
        robot = franky.Robot(args.robot_ip, realtime_config=franky.RealtimeConfig.Ignore)
        state = robot.state
    except FrankaError as exc:
        raise CliError(str(exc)) from None
    except Exception as exc:  # franky's NetworkException and kin
        raise CliError(fci_unreachable_message(args.robot_ip, exc)) from None
    finally:
        restore_scheduling(policy)  # libfranka made this thread SCHED_FIFO 99

    def fmt(values: object) -> str:
        return "[" + ", ".join(f"{v:.4f}" for v in np.asarray(values, float).ravel()) + "]"

    pose = state.O_T_EE
    print(f"# TCP of the Franka at {args.robot_ip}, base frame (m; quaternion x, y, z, w).")
    print("# Paste tcp_pos_m into a rig's workspace box, q_rad into franka.home_q_rad.")
    print(f"tcp_pos_m: {fmt(pose.translation)}")
    print(f"tcp_quat_xyzw: {fmt(pose.quaternion)}")
    print(f"q_rad: {fmt(state.q)}")
    return 0


def run_check_workspace(args: argparse.Namespace) -> int:
    """One line per probe point of the rig's box (corners, face centres, centre); exit 1 when
    any is out of the arm's reach."""
    from robot_rl.config import ConfigError, load_config
    from robot_rl.hardware.franka import FrankaConfig
    from robot_rl.hardware.franka_backend import FrankaRig
    from robot_rl.hardware.franka_sim import SIM_HOME_Q_RAD, SIM_WORKSPACE

    if args.franka_sim:
        rig = FrankaRig(FrankaConfig(robot_ip="127.0.0.1", home_q_rad=SIM_HOME_Q_RAD),
                        workspace=SIM_WORKSPACE)  # fmt: skip
    else:
        try:
            rig = load_config(FrankaRig, args.rig)
        except ConfigError as exc:
            raise CliError(str(exc)) from None
    results = rig.workspace_reach()
    for result in results:
        print(("ok    " if result.reachable else "FAIL  ") + result.line(), flush=True)
    out = [r for r in results if not r.reachable]
    lo, hi = list(rig.workspace.pos_min_m), list(rig.workspace.pos_max_m)
    if not out:
        print(f"check-workspace: the {rig.franka.model} reaches all {len(results)} probe points "
              f"of the box {lo}..{hi} with the tool at its nominal orientation")  # fmt: skip
        return 0
    print(f"check-workspace: {len(out)} of {len(results)} probe points of the box {lo}..{hi} "
          f"are out of the {rig.franka.model}'s reach with the tool at its nominal orientation; "
          "targets clipped there pull the arm to its reach limit (tracker mode trips its speed "
          "guard). Shrink workspace.pos_max_m / pos_min_m toward the points that pass."
          )  # fmt: skip
    return 1


def _rig(args: argparse.Namespace, sim_ip: str | None) -> object:
    from robot_rl.config import ConfigError, load_config
    from robot_rl.hardware.franka import FrankaConfig
    from robot_rl.hardware.franka_backend import FrankaRig
    from robot_rl.hardware.franka_sim import (
        SIM_FRICTION_COULOMB_NM,
        SIM_HOME_Q_RAD,
        SIM_WORKSPACE,
        SimReachBackend,
    )

    if sim_ip is not None:  # franky-sim on this machine: no RT kernel, its own start posture
        franka = FrankaConfig(robot_ip=sim_ip, realtime="ignore", home_q_rad=SIM_HOME_Q_RAD,
                              friction_coulomb_nm=SIM_FRICTION_COULOMB_NM)  # fmt: skip
        rig = FrankaRig(franka, workspace=SIM_WORKSPACE)
        if args.task == "reach":  # the reach task's smaller box; a start pose within 1 cm will do
            reset = dataclasses.replace(rig.reset, settle_pos_m=0.01)
            rig = FrankaRig(franka, workspace=SimReachBackend.workspace, reset=reset)
    elif args.rig is not None:
        try:
            rig = load_config(FrankaRig, args.rig)
        except ConfigError as exc:
            raise CliError(str(exc)) from None
    elif args.robot_ip:
        rig = FrankaRig(FrankaConfig(robot_ip=args.robot_ip))
    else:
        raise CliError("--backend franka needs --robot-ip IP or --rig RIG.yaml")
    changes = {}
    if args.robot_ip and sim_ip is None:
        changes["robot_ip"] = args.robot_ip
    if args.control:
        changes["control"] = args.control
    try:
        franka = dataclasses.replace(rig.franka, **changes)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return dataclasses.replace(rig, franka=franka)


def run_franka_server(args: argparse.Namespace) -> int:
    """``robot-server --backend franka|franka-sim``: a Franka behind the robot server."""
    from robot_rl.hardware.franka import FrankaError
    from robot_rl.hardware.franka_backend import FrankaBackend, realtime_setup
    from robot_rl.hardware.franka_sim import FrankySim, SimReachBackend
    from robot_rl.transport.robot_server import RobotEndpoints, RobotServer
    from robot_rl.transport.security import SecurityConfig, SecurityError

    sim = FrankySim().start() if args.backend == "franka-sim" else None
    backend = None
    server = None
    try:
        rig = _rig(args, sim.ip if sim else None)
        franka = rig.franka  # type: ignore[attr-defined]
        if franka.rt_priority > 1:
            # Every thread of this process (the server's, the gripper's) starts from here and
            # runs SCHED_FIFO below the control loop: a normal-priority thread preempted while
            # it holds the GIL would stall the 1 kHz loop past franky's 50 ms signal timeout.
            realtime_setup(None, max(1, franka.rt_priority - 20))
        backend = FrankaBackend(franka, rig.loop_config(), rig.reset)  # type: ignore[attr-defined]
        try:
            backend.start()
        except FrankaError as exc:
            raise CliError(str(exc)) from None
        served = backend
        if sim is not None and args.task == "reach":  # a goal and success, as the twin's reach
            served = SimReachBackend(backend)
            served.reset({"seed": 0})
        security = SecurityConfig(keys_dir=args.keys, name=args.key, plaintext=args.plaintext)
        try:
            server = RobotServer(served, RobotEndpoints(args.commands, args.state), security)
        except SecurityError as exc:
            raise CliError(str(exc)) from None
        server.start()
        print(f"robot server: franka ({backend.control}) at {backend.config.robot_ip} on "
              f"{server.commands_endpoint}, state on {server.state_endpoint}; Ctrl-C stops; the "
              "hardware stop stays in the operator's hand", flush=True)  # fmt: skip
        with contextlib.suppress(KeyboardInterrupt):
            server.wait(args.duration)
    finally:
        if server is not None:
            server.stop()
        if backend is not None:
            backend.close()
        if sim is not None:
            sim.stop()
    print(f"robot server: {server.stats.ticks} ticks, {server.stats.targets} targets, "
          f"{backend.recoveries} recoveries")  # fmt: skip
    return 0
