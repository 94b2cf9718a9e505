"""The ``robot-rl`` command line: ``robot-rl bench control --json out.json``, ``robot-rl demo``.

Each subcommand is one ``_add_<name>`` function that adds its parser and sets ``handler``; add a
new one to ``SUBCOMMANDS``. Benchmarks are registered in ``BENCHES`` by name as "module:function"
and imported only when run, so ``--help`` stays fast and works whatever optional parts are missing.
A benchmark function takes ``seed: int`` and ``quick: bool`` (and, if it declares them, ``task``,
``obs``, ``steps``, ``run_dir`` from the matching flags) and returns a flat dict of metrics.

Usage errors (unknown bench, unwritable path, bad arguments) are logged and give exit code 2; the
CLI routes log records to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from robot_rl.bench.report import print_table, write_json
from robot_rl.cli_session import add_session

log = logging.getLogger(__name__)

BenchFn = Callable[..., dict[str, float]]

# name -> "module:function"; the function is called as fn(seed=..., quick=...).
BENCHES: dict[str, str] = {
    "console": "robot_rl.bench.console:run_console_bench",
    "control": "robot_rl.bench.control:run_control_bench",
    "learner": "robot_rl.bench.learner:run_learner_bench",
    "learning": "robot_rl.bench.learning:run_learning_bench",
    "reward": "robot_rl.bench.reward:run_reward_bench",
    "transport": "robot_rl.bench.transport:run_transport_bench",
}

USAGE_ERROR = 2


class CliError(Exception):
    """A usage error: reported through the log, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises CliError instead of exiting, so main() logs it and returns 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise CliError(message)


# -- bench ----------------------------------------------------------------------------------------
def _add_bench(subparsers: argparse._SubParsersAction) -> None:
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
    parser.set_defaults(handler=_run_bench)


def _load_bench(name: str) -> BenchFn:
    module_name, _, attr = BENCHES[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _check_writable(path: Path) -> None:
    """Fail before a long run if ``path`` cannot be written (a folder, or no writable ancestor)."""
    if path.is_dir():
        raise CliError(f"--json {str(path)!r} is a folder; give a file path")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise CliError(
            f"--json {str(path)!r} cannot be written: {str(ancestor)!r} is not a writable folder"
        )


def _run_bench(args: argparse.Namespace) -> int:
    if args.name not in BENCHES:
        raise CliError(f"unknown bench {args.name!r}; known benches: {', '.join(sorted(BENCHES))}")
    if args.json is not None:  # checked before the (long) run, not after it
        _check_writable(args.json)
    bench = _load_bench(args.name)
    options = {
        key: value
        for key, value in (
            ("task", args.task),
            ("obs", args.obs),
            ("steps", args.steps),
            ("run_dir", args.run_dir),
        )
        if value is not None
    }
    accepted = inspect.signature(bench).parameters
    unknown = [f"--{key.replace('_', '-')}" for key in options if key not in accepted]
    if unknown:
        raise CliError(f"bench {args.name} takes no {', '.join(unknown)}")
    try:
        results = bench(seed=args.seed, quick=args.quick, **options)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print_table(
        results, title=f"bench {args.name} (seed {args.seed}{', quick' if args.quick else ''})"
    )
    if args.json is not None:
        try:
            write_json(args.json, results)
        except OSError as exc:
            raise CliError(f"could not write --json {str(args.json)!r}: {exc}") from exc
        log.info("wrote %s", args.json)
    return 0


# -- demo -----------------------------------------------------------------------------------------
def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="solve the twin's tasks with the scripted experts and report what happened"
    )
    parser.add_argument("--task", default="all", help="a task name, or all (default)")
    parser.add_argument("--seed", type=int, default=0, help="first episode seed (default 0)")
    parser.add_argument("--episodes", type=int, default=2, help="episodes per task (default 2)")
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from robot_rl.demo import run_demo  # lazily: it pulls in the twin and the tasks

    if args.episodes < 1:
        raise CliError(f"--episodes={args.episodes}; need at least 1")
    return int(run_demo(args.task, args.seed, args.episodes))


# -- train / eval / record ---------------------------------------------------------------------
def _add_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="run a sim training session (SAC/RLPD with demos and interventions)"
    )
    parser.add_argument("--task", help="task name (sets env.task)")
    parser.add_argument("--obs", choices=("pixels", "state"), help="observation mode (env.obs)")
    parser.add_argument("--steps", type=int, help="env steps to train for (env_steps)")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--name", help="run name under runs/ (default <task>-<obs>-<seed>)")
    parser.add_argument("--config", type=Path, help="YAML file with TrainConfig fields")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config field, e.g. --set agent.utd_ratio=2 (repeatable)",
    )  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="continue the run in its directory")
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from robot_rl.config import ConfigError, load_config
    from robot_rl.runtime.train import TrainConfig, TrainingSession, load_train_config

    overrides = list(args.set)
    for flag, key in (("task", "env.task"), ("obs", "env.obs"), ("steps", "env_steps"),
                      ("seed", "seed"), ("name", "name")):  # fmt: skip
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    try:
        config = load_config(TrainConfig, args.config, overrides)
        if args.resume:  # the run's own config wins; only the step budget may grow
            run_dir = Path(config.run_dir) / config.run_name
            steps = [f"env_steps={args.steps}"] if args.steps else []
            load_train_config(run_dir)  # clear error if it is not a run
            config = load_config(TrainConfig, run_dir / "config.yaml", steps)
        session = TrainingSession(config, resume=args.resume)
    except (ConfigError, FileNotFoundError, FileExistsError) as exc:
        raise CliError(str(exc)) from None
    result = session.run()
    print(f"final evaluation: {result}")
    print(f"run directory: {session.dir}")
    return 0


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a checkpoint over seeded episodes")
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoints/latest.pt")
    parser.add_argument("--episodes", type=int, default=20, help="episodes (default 20)")
    parser.add_argument("--seed", type=int, default=100_000, help="first episode seed")
    parser.set_defaults(handler=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from robot_rl.agents.checkpoint import CheckpointError, load_checkpoint
    from robot_rl.agents.sac import SACAgent
    from robot_rl.config import ConfigError
    from robot_rl.envs.twin_env import make_env
    from robot_rl.runtime.train import evaluate_policy, load_train_config

    if not args.checkpoint.is_file():
        raise CliError(f"checkpoint {args.checkpoint} not found; pass runs/<name>/checkpoints/...")
    if args.episodes < 1:
        raise CliError(f"--episodes={args.episodes}; need at least 1")
    try:
        config = load_train_config(args.checkpoint.parent.parent)
        env = make_env(config.env)
        agent = SACAgent(env.observation_space, env.action_space, config.agent, config.seed)
        load_checkpoint(args.checkpoint, agent)
    except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from None
    result = evaluate_policy(agent, env, args.episodes, args.seed)
    print_table(result, title=f"eval {args.checkpoint}")
    return 0


def _add_record(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("record", help="record demos (scripted expert or teleop)")
    parser.add_argument("--task", required=True, help="task name")
    parser.add_argument("--episodes", type=int, default=20, help="successful episodes to record")
    parser.add_argument("--obs", choices=("pixels", "state"), default="pixels")
    parser.add_argument("--out", type=Path, help="directory (default runs/demos/<task>-<obs>)")
    parser.add_argument("--seed", type=int, default=0)
    drivers = ("scripted", "spacemouse", "gamepad", "console")
    parser.add_argument("--teleop", choices=drivers, default="scripted",
                        help="who drives: the scripted expert (default), a SpaceMouse, a "
                        "gamepad, or the console page (keys, browser gamepad)")  # fmt: skip
    parser.add_argument("--console-port", type=int, default=8765, help="console page port")
    parser.add_argument("--select", default="", help="which teleop device (serial, path, index)")
    parser.set_defaults(handler=_run_record)


def _run_record(args: argparse.Namespace) -> int:
    from robot_rl.envs.twin_env import TwinEnvConfig, make_env
    from robot_rl.runtime.record import record_demos

    if args.episodes < 1:
        raise CliError(f"--episodes={args.episodes}; need at least 1")
    try:
        env = make_env(TwinEnvConfig(task=args.task, obs=args.obs))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    out = args.out or Path("runs") / "demos" / f"{args.task}-{args.obs}"
    if args.teleop == "scripted":
        paths = record_demos(env, args.episodes, out, seed=args.seed)
    else:
        paths = _record_teleop(args, env, out)
    print(f"recorded {len(paths)} episodes into {out}")
    return 0


def _record_teleop(args: argparse.Namespace, env: Any, out: Path) -> list[Path]:
    from robot_rl.console.bridge import operator_setup
    from robot_rl.console.server import ConsoleConfig
    from robot_rl.runtime.record import record_teleop_demos
    from robot_rl.teleop.command import DeviceNotFoundError, TeleopConfig

    teleop = TeleopConfig(device=args.teleop, select=args.select)
    console = ConsoleConfig(enabled=args.teleop == "console", port=args.console_port)
    cameras = list(env.config.cameras) if env.config.obs == "pixels" else []
    try:
        setup = operator_setup(env, console, teleop, None, cameras)
    except DeviceNotFoundError as exc:
        raise CliError(str(exc)) from None
    device = setup.bridge.operator.device
    print("drive the arm; mark each episode on the console (y success, n failure) or let the "
          "task's success end it; only successful episodes are kept. Ctrl-C stops.")  # fmt: skip
    try:
        return record_teleop_demos(env, device, teleop, args.episodes, out, args.seed,
                                   hub=setup.hub)  # fmt: skip
    except KeyboardInterrupt:
        return sorted(out.glob("episode_*.npz"))
    finally:
        setup.close()


def _run_cameras_publish_twin(args: argparse.Namespace) -> int:
    """The twin's cameras as a stream source (for viewers and the console) with no robot: each
    policy step of the scripted expert renders and publishes both cameras."""
    import dataclasses

    from robot_rl.envs.twin_env import TwinEnvConfig
    from robot_rl.sim.cameras import DEFAULT_CAMERAS
    from robot_rl.sim.scene import SceneConfig, TwinScene
    from robot_rl.transport.camera_stream import CameraPublisher
    from robot_rl.transport.security import SecurityConfig, SecurityError

    try:
        TwinEnvConfig(task=args.task)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    specs = tuple(
        dataclasses.replace(c, width=args.size, height=args.size) for c in DEFAULT_CAMERAS
    )
    security = SecurityConfig(keys_dir=args.keys, name=args.key, plaintext=args.plaintext)
    try:
        publisher = CameraPublisher(args.endpoint, security, jpeg_quality=args.jpeg)
    except (SecurityError, ValueError) as exc:
        raise CliError(str(exc)) from None
    scene = TwinScene(SceneConfig(task=args.task, cameras=specs))
    print(f"cameras: {[c.camera_id for c in specs]} of the {args.task} twin on "
          f"{publisher.endpoint}; Ctrl-C stops")  # fmt: skip
    start, frames, seed = time.monotonic(), 0, 0
    try:
        while args.duration is None or time.monotonic() - start < args.duration:
            scene.reset(seed)
            expert = scene.task.expert()
            while scene.episode_time_s < scene.task.max_episode_s and (
                args.duration is None or time.monotonic() - start < args.duration
            ):
                action = expert.act(scene.twin)
                if scene.step(action.target, action.gripper).success:
                    break
                for frame in scene.render().values():
                    # The twin stamps frames with sim time; the wire carries host time.
                    publisher.publish(dataclasses.replace(frame, stamp_s=time.monotonic()))
                    frames += 1
            seed += 1
    except KeyboardInterrupt:
        pass
    finally:
        publisher.close()
        scene.close()
    print(f"cameras: published {frames} frames")
    return 0


# -- learner / actor ------------------------------------------------------------------------------
def _add_network_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML file with TrainConfig fields")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a TrainConfig field (repeatable)")  # fmt: skip
    parser.add_argument("--transitions", default="tcp://127.0.0.1:5555",
                        help="transitions endpoint (learner binds, actors connect)")  # fmt: skip
    parser.add_argument("--weights", default="tcp://127.0.0.1:5556", help="weights endpoint")
    parser.add_argument("--keys", default="keys", help="CURVE keys folder (robot-rl keys)")
    parser.add_argument("--key", help="this process's key name (default: learner / actor id)")
    parser.add_argument("--server-key", default="learner", help="the learner's key name")
    parser.add_argument("--plaintext", action="store_true",
                        help="no CURVE (refused unless every endpoint is loopback)")  # fmt: skip


def _network_configs(
    args: argparse.Namespace, default_key: str, actor_id: str = "actor-0"
) -> tuple[Any, Any]:
    from robot_rl.config import ConfigError, load_config
    from robot_rl.runtime.distributed import DistributedConfig
    from robot_rl.runtime.train import TrainConfig
    from robot_rl.transport.learner_link import LinkEndpoints
    from robot_rl.transport.security import SecurityConfig

    try:
        train = load_config(TrainConfig, args.config, list(args.set))
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    security = SecurityConfig(
        keys_dir=args.keys, name=args.key or default_key, server_name=args.server_key,
        plaintext=args.plaintext,
    )  # fmt: skip
    net = DistributedConfig(LinkEndpoints(args.transitions, args.weights), security, actor_id)
    return train, net


def _add_learner(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("learner", help="run the learner process (actors connect)")
    _add_network_flags(parser)
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--resume", action="store_true", help="load checkpoints/latest.pt")
    parser.set_defaults(handler=_run_learner)


def _run_learner(args: argparse.Namespace) -> int:
    from robot_rl.runtime.distributed import Learner
    from robot_rl.transport.security import SecurityError

    train, net = _network_configs(args, "learner")
    try:
        learner = Learner(train, net, resume=args.resume)
    except SecurityError as exc:
        raise CliError(str(exc)) from None
    learner.run(args.duration)
    print(f"learner: {learner.updates} updates on {learner.steps_received} received steps")
    return 0


def _add_actor(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("actor", help="run an actor process against a learner")
    _add_network_flags(parser)
    parser.add_argument("--actor-id", default="actor-0", help="unique per actor")
    parser.add_argument("--steps", type=int, default=1_000_000, help="env steps to act")
    parser.add_argument("--spool", type=Path, help="held transitions (default runs/spool/ID)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=_run_actor)


def _run_actor(args: argparse.Namespace) -> int:
    from robot_rl.runtime.distributed import Actor
    from robot_rl.transport.security import SecurityError

    train, net = _network_configs(args, args.actor_id, args.actor_id)
    spool = args.spool or Path("runs") / "spool" / args.actor_id
    try:
        actor = Actor(train, net, spool)
    except (SecurityError, ValueError) as exc:
        raise CliError(str(exc)) from None
    stats = actor.run(args.steps, args.seed)
    delivered = actor.close()
    print(f"actor {args.actor_id}: {stats}")
    if not delivered:
        print(f"actor {args.actor_id}: some steps are still held in {spool}; they go out next run")
    return 0


def _add_robot_server(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "robot-server", help="serve the twin's controller loop over ZMQ (targets in, state out)"
    )
    parser.add_argument("--task", default="reach", help="task scene (default reach)")
    parser.add_argument("--commands", default="tcp://127.0.0.1:5560", help="ROUTER endpoint")
    parser.add_argument("--state", default="tcp://127.0.0.1:5561", help="state PUB endpoint")
    parser.add_argument("--keys", default="keys", help="CURVE keys folder")
    parser.add_argument("--key", default="robot", help="this server's key name")
    parser.add_argument("--plaintext", action="store_true", help="loopback only, no CURVE")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.set_defaults(handler=_run_robot_server)


def _run_robot_server(args: argparse.Namespace) -> int:
    from robot_rl.envs.twin_env import TwinEnvConfig
    from robot_rl.sim.scene import SceneConfig, TwinScene
    from robot_rl.transport.robot_server import RobotEndpoints, RobotServer, SceneBackend
    from robot_rl.transport.security import SecurityConfig, SecurityError

    try:
        TwinEnvConfig(task=args.task)  # names the known tasks if this one is not
    except ValueError as exc:
        raise CliError(str(exc)) from None
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
        start = time.monotonic()
        while args.duration is None or time.monotonic() - start < args.duration:
            time.sleep(0.2)
            if server.error is not None:
                break
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        scene.close()
    print(f"robot server: {server.stats.ticks} ticks, {server.stats.targets} targets")
    return 0


# -- reward -------------------------------------------------------------------------------------
def _add_reward(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("reward", help="success detectors: collect, train, evaluate")
    actions = parser.add_subparsers(dest="reward_command", metavar="ACTION", required=True)
    collect = actions.add_parser("collect", help="labelled twin frames (ground-truth labels)")
    collect.add_argument("--task", required=True)
    collect.add_argument("--episodes", type=int, default=20)
    collect.add_argument("--cameras", default="front,wrist")
    collect.add_argument("--size", type=int, default=128)
    collect.add_argument("--seed", type=int, default=0)
    collect.add_argument("--out", type=Path, required=True, help="dataset .npz to write")
    collect.add_argument("--teleop", choices=("spacemouse", "gamepad", "console"),
                         help="label by hand: drive, press y when done, n to give up")  # fmt: skip
    collect.add_argument("--config", type=Path, help="training config whose env to use "
                         "(a robot: env.remote with camera_endpoints)")  # fmt: skip
    collect.add_argument("--console-port", type=int, default=8765)
    collect.set_defaults(handler=_run_reward_collect)
    helps = {
        "train": "fit and calibrate a probe (default) or a fine-tuned classifier",
        "eval": "metrics and a PR curve of a trained reward model",
        "relabel": "add the episodes a model fired wrongly on to the training data, refit",
    }
    for name, helptext in helps.items():  # fmt: skip
        p = actions.add_parser(name, help=helptext)
        p.add_argument("--data", type=Path, required=True, help="labelled frames (.npz)")
        p.add_argument("--backbone", help="open_clip source for a probe: local-dir:PATH, a "
                       "checkpoint file, hf-hub:ORG/REPO (a probe records its own)")  # fmt: skip
        p.add_argument("--model-name", help="open_clip config for a checkpoint file")
        p.add_argument("--preprocess", type=Path, help="preprocess JSON for a checkpoint file")
        p.add_argument("--model", "--probe", dest="model", type=Path, required=True,
                       help="probe JSON or classifier folder (written by train)")  # fmt: skip
        p.add_argument("--json", type=Path, help="write the metrics here")
        p.add_argument("--k", type=int, default=3, help="decision layer: frames in a row")
    train = actions.choices["train"]
    train.add_argument("--kind", choices=("probe", "classifier"), default="probe")
    train.add_argument("--success-prompt", action="append", help="probe: success prompts")
    train.add_argument("--baseline-prompt", action="append", help="probe: baseline prompts")
    train.add_argument("--precision", type=float, default=0.99, help="target precision")
    train.add_argument("--max-positives", type=int, default=200)
    train.add_argument("--encoder", choices=("conv", "resnet10"), default="conv",
                       help="classifier: per-camera CNN")  # fmt: skip
    train.add_argument("--input-size", type=int, default=64, help="classifier: frame size")
    train.add_argument("--steps", type=int, default=1500, help="classifier: gradient steps")
    train.add_argument("--pretrained-encoder", help="classifier: backbone weights file")
    train.add_argument("--freeze-encoder", action="store_true")
    train.set_defaults(handler=_run_reward_train)
    actions.choices["eval"].add_argument("--png", type=Path, help="PR curve image")
    actions.choices["eval"].set_defaults(handler=_run_reward_eval)
    relabel = actions.choices["relabel"]
    relabel.add_argument("--new", type=Path, required=True,
                         help="new labelled frames to check the model on (.npz)")  # fmt: skip
    relabel.add_argument("--out-data", type=Path, required=True, help="merged dataset to write")
    relabel.add_argument("--refit", type=Path, help="refit on the merged data, write here")
    relabel.add_argument("--steps", type=int, default=1500, help="classifier refit: steps")
    relabel.add_argument("--success-prompt", action="append", help="probe refit: prompts")
    relabel.add_argument("--baseline-prompt", action="append", help="probe refit: prompts")
    relabel.set_defaults(handler=_run_reward_relabel)


def _run_reward_collect(args: argparse.Namespace) -> int:
    from robot_rl.rewards.dataset import collect_twin

    if args.episodes < 2:
        raise CliError(f"--episodes={args.episodes}; need at least 2 (successes and failures)")
    if args.teleop:
        return _reward_collect_teleop(args)
    try:
        data = collect_twin(args.task, args.episodes, tuple(args.cameras.split(",")), args.size,
                            args.seed)  # fmt: skip
    except (KeyError, ValueError) as exc:
        raise CliError(str(exc)) from None
    data.save(args.out)
    print(f"collected {len(data)} frames ({int(data.label.sum())} positive) into {args.out}")
    return 0


def _reward_collect_teleop(args: argparse.Namespace) -> int:
    """Frames labelled by the operator's console marks while they drive (sim or a robot)."""
    import dataclasses

    from robot_rl.config import ConfigError, load_config
    from robot_rl.console.bridge import operator_setup
    from robot_rl.console.server import ConsoleConfig
    from robot_rl.envs.twin_env import TwinEnvConfig, make_env
    from robot_rl.rewards.dataset import collect_teleop
    from robot_rl.runtime.train import TrainConfig
    from robot_rl.teleop.command import DeviceNotFoundError, TeleopConfig

    try:
        env_config = (load_config(TrainConfig, args.config).env if args.config
                      else TwinEnvConfig(task=args.task))  # fmt: skip
        env_config = dataclasses.replace(env_config, task=args.task, obs="pixels",
                                         cameras=tuple(args.cameras.split(",")),
                                         image_width=args.size, image_height=args.size)  # fmt: skip
        env = make_env(env_config)
    except (ConfigError, ValueError) as exc:
        raise CliError(str(exc)) from None
    teleop = TeleopConfig(device=args.teleop)
    console = ConsoleConfig(enabled=True, port=args.console_port)
    try:
        setup = operator_setup(env, console, teleop, None, list(env_config.cameras))
    except DeviceNotFoundError as exc:
        env.close()
        raise CliError(str(exc)) from None
    print("drive the arm; press y on the console when the task is done, n to give up")
    try:
        data = collect_teleop(env, setup.bridge.operator.device, teleop, setup.hub,
                              args.episodes, seed=args.seed)  # fmt: skip
    finally:
        setup.close()
        env.close()
    data.save(args.out)
    print(f"collected {len(data)} frames ({int(data.label.sum())} positive) into {args.out}")
    return 0


def _load_dataset(path: Path) -> Any:
    from robot_rl.rewards.dataset import FrameDataset

    try:
        return FrameDataset.load(path)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise CliError(f"dataset {path}: {exc}") from None


def _load_reward_scorer(args: argparse.Namespace, cameras: list[str]) -> Any:
    """The trained model named by --model, as a frame scorer."""
    from robot_rl.rewards.backbone import MissingWeightsError, load_backbone
    from robot_rl.rewards.classifier import FrameClassifier
    from robot_rl.rewards.detector import EmbeddingFrameScorer
    from robot_rl.rewards.probe import ProbeScorer

    try:
        if args.model.is_dir():
            return FrameClassifier.load(args.model)
        probe = ProbeScorer.load(args.model)
        source = args.backbone or probe.backbone
        if not source:
            raise ValueError(f"probe {args.model} names no backbone; pass --backbone")
        backbone = load_backbone(source, args.model_name, args.preprocess)
    except (FileNotFoundError, MissingWeightsError, ValueError, KeyError) as exc:
        raise CliError(str(exc)) from None
    return EmbeddingFrameScorer(backbone, probe, probe.cameras or cameras)


def _fit_reward_model(args: argparse.Namespace, data: Any, kind: str, out: Path,
                      classifier_config: Any = None) -> dict:  # fmt: skip
    """Fit a probe or classifier on ``data``, save it to ``out``; the held-out report."""
    from robot_rl.rewards.backbone import MissingWeightsError, load_backbone
    from robot_rl.rewards.classifier import ClassifierConfig, TrainConfig, train_classifier
    from robot_rl.rewards.training import train_probe

    cameras = list(data.meta.get("cameras") or sorted(data.frames))
    precision = getattr(args, "precision", 0.99)
    max_positives = getattr(args, "max_positives", 200)
    try:
        if kind == "classifier":
            config = classifier_config or ClassifierConfig(
                tuple(cameras), input_size=args.input_size, encoder=args.encoder,
                pretrained_encoder=args.pretrained_encoder, freeze_encoder=args.freeze_encoder,
            )  # fmt: skip
            steps = getattr(args, "steps", TrainConfig.steps)
            model, report = train_classifier(data, config, TrainConfig(
                steps=steps, max_positives=max_positives, target_precision=precision))  # fmt: skip
            model.save(out)
            return report
        if not args.success_prompt or not args.baseline_prompt:
            raise ValueError("a probe needs --success-prompt and --baseline-prompt (one or more)")
        if not args.backbone:
            raise ValueError("a probe needs --backbone (local-dir:PATH, a checkpoint, hf-hub:)")
        backbone = load_backbone(args.backbone, args.model_name, args.preprocess)
        probe, report = train_probe(data, backbone, args.success_prompt, args.baseline_prompt,
                                    cameras, target_precision=precision,
                                    max_positives=max_positives)  # fmt: skip
    except (FileNotFoundError, MissingWeightsError, ValueError, KeyError) as exc:
        raise CliError(str(exc)) from None
    probe.backbone = args.backbone
    out.parent.mkdir(parents=True, exist_ok=True)
    probe.save(out)
    return report


def _run_reward_train(args: argparse.Namespace) -> int:
    data = _load_dataset(args.data)
    report = _fit_reward_model(args, data, args.kind, args.model)
    print_table(report, title=f"{args.kind} {args.model} (held-out episodes)")
    if args.json:  # undefined metrics (no positives held out, say) are left out, not NaN
        write_json(args.json, {k: v for k, v in report.items() if v == v})
    return 0


def _score_dataset(args: argparse.Namespace, data: Any) -> tuple[Any, Any]:
    from robot_rl.rewards.decision import DecisionConfig

    scorer = _load_reward_scorer(args, list(data.meta.get("cameras") or sorted(data.frames)))
    try:
        probs = scorer.score({c: data.frames[c] for c in scorer.cameras})
        decision = DecisionConfig.from_threshold(scorer.threshold, args.k)
    except (KeyError, ValueError) as exc:
        raise CliError(f"cannot score {args.data} with {args.model}: {exc}") from None
    return scorer, (probs, decision)


def _run_reward_eval(args: argparse.Namespace) -> int:
    from robot_rl.rewards.training import evaluate, pr_curve_png

    data = _load_dataset(args.data)
    scorer, (probs, decision) = _score_dataset(args, data)
    report = evaluate(probs, data.label, data.episode, scorer.threshold, data.step, decision)
    print_table(report, title=f"{args.model} on {args.data}")
    if args.png:
        print(f"PR curve: {pr_curve_png(probs, data.label, scorer.threshold, args.png)}")
    if args.json:
        write_json(args.json, {k: v for k, v in report.items() if v == v})
    return 0


def _run_reward_relabel(args: argparse.Namespace) -> int:
    from robot_rl.rewards.relabel import add_false_positives
    from robot_rl.rewards.training import evaluate

    base, new = _load_dataset(args.data), _load_dataset(args.new)
    scorer, (probs, decision) = _score_dataset(args, new)
    before = evaluate(probs, new.label, new.episode, scorer.threshold, new.step, decision)
    try:
        merged, found = add_false_positives(base, new, probs, decision)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    merged.save(args.out_data)
    print(f"{len(found.episodes)} episode(s) of {args.new} fired wrongly; {len(merged) - len(base)}"
          f" frames added: {args.out_data}")  # fmt: skip
    report = {f"before_{k}": v for k, v in before.items()}
    report["false_positive_episodes"] = float(len(found.episodes))
    if args.refit:
        kind = "classifier" if args.model.is_dir() else "probe"
        config = getattr(scorer, "config", None)
        args.backbone = args.backbone or getattr(getattr(scorer, "scorer", None), "backbone", "")
        refit = _fit_reward_model(args, merged, kind, args.refit, config)
        report.update({f"refit_{k}": v for k, v in refit.items()})
        print(f"refit {kind}: {args.refit}")
    print_table(report, title="relabel")
    if args.json:
        write_json(args.json, {k: v for k, v in report.items() if v == v})
    return 0


# -- keys -----------------------------------------------------------------------------------------
def _add_keys(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keys", help="manage ZMQ CURVE keys for actors and learners")
    actions = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    gen = actions.add_parser("generate", help="create NAME.key (public) and NAME.key_secret")
    gen.add_argument("--dir", type=Path, default=Path("keys"), help="folder (default keys/)")
    gen.add_argument("--name", required=True, help="e.g. learner, actor-1")
    gen.set_defaults(handler=_run_keys_generate)


def _run_keys_generate(args: argparse.Namespace) -> int:
    from robot_rl.transport.security import generate_keys

    try:
        public, secret = generate_keys(args.dir, args.name)
    except (FileExistsError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print(f"public key: {public} (copy it to the peers that must trust {args.name})")
    print(f"secret key: {secret} (keep it on this machine; mode 0600)")
    return 0


# -- cameras --------------------------------------------------------------------------------------
def _add_cameras(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cameras", help="list RealSense cameras; stream cameras")
    actions = parser.add_subparsers(dest="cameras_command", metavar="ACTION", required=True)
    actions.add_parser("list", help="serial, model and firmware of each camera").set_defaults(
        handler=_run_cameras_list
    )
    pub = actions.add_parser(
        "publish-twin", help="stream the twin's front and wrist cameras while its expert works"
    )
    pub.add_argument("--task", default="pick_cube")
    pub.add_argument("--endpoint", default="tcp://127.0.0.1:5570", help="PUB endpoint")
    pub.add_argument("--size", type=int, default=128, help="square image side (default 128)")
    pub.add_argument("--jpeg", type=int, help="JPEG quality 1-100 (default raw frames)")
    pub.add_argument("--keys", default="keys")
    pub.add_argument("--key", default="cameras")
    pub.add_argument("--plaintext", action="store_true", help="loopback only, no CURVE")
    pub.add_argument("--duration", type=float, help="stop after this many seconds")
    pub.set_defaults(handler=_run_cameras_publish_twin)
    mirror = actions.add_parser(
        "mirror-twin", help="stream the cameras of a twin that runs behind a robot server"
    )
    mirror.add_argument("--task", default="reach", help="the robot server's task")
    mirror.add_argument("--commands", default="tcp://127.0.0.1:5560", help="robot server ROUTER")
    mirror.add_argument("--state", default="tcp://127.0.0.1:5561", help="robot server state PUB")
    mirror.add_argument("--endpoint", default="tcp://127.0.0.1:5570", help="PUB endpoint")
    mirror.add_argument("--size", type=int, default=128, help="square image side (default 128)")
    mirror.add_argument("--fps", type=float, default=10.0)
    mirror.add_argument("--keys", default="keys")
    mirror.add_argument("--key", default="cameras")
    mirror.add_argument("--plaintext", action="store_true", help="loopback only, no CURVE")
    mirror.add_argument("--duration", type=float, help="stop after this many seconds")
    mirror.set_defaults(handler=_run_cameras_mirror_twin)
    real = actions.add_parser("publish", help="stream RealSense cameras (one process per host)")
    real.add_argument("--camera", action="append", required=True, metavar="ID=SERIAL",
                      help="camera id and serial number, e.g. front=123456 (repeatable; "
                      "SERIAL may be empty when one camera is connected)")  # fmt: skip
    real.add_argument("--endpoint", default="tcp://0.0.0.0:5570", help="PUB endpoint")
    real.add_argument("--width", type=int, default=640)
    real.add_argument("--height", type=int, default=480)
    real.add_argument("--fps", type=int, default=30)
    real.add_argument("--resize", type=int, help="square output side (e.g. 128)")
    real.add_argument("--jpeg", type=int, help="JPEG quality 1-100 (default raw frames)")
    real.add_argument("--keys", default="keys")
    real.add_argument("--key", default="cameras")
    real.add_argument("--plaintext", action="store_true", help="loopback only, no CURVE")
    real.add_argument("--duration", type=float, help="stop after this many seconds")
    real.set_defaults(handler=_run_cameras_publish)


def _run_cameras_mirror_twin(args: argparse.Namespace) -> int:
    """Render the front and wrist cameras of the twin behind a robot server: a render-only mirror
    follows the server's published joints and body poses (sim.mirror), frames go out stamped with
    host time."""
    import dataclasses

    from robot_rl.envs.twin_env import TwinEnvConfig
    from robot_rl.interfaces import Frame
    from robot_rl.sim.cameras import DEFAULT_CAMERAS
    from robot_rl.sim.mirror import TwinMirror
    from robot_rl.sim.scene import SceneConfig
    from robot_rl.transport.camera_stream import CameraPublisher
    from robot_rl.transport.robot_server import RobotClient, RobotEndpoints
    from robot_rl.transport.security import SecurityConfig, SecurityError

    try:
        TwinEnvConfig(task=args.task)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    specs = tuple(dataclasses.replace(c, width=args.size, height=args.size)
                  for c in DEFAULT_CAMERAS)  # fmt: skip
    security = SecurityConfig(keys_dir=args.keys, name=args.key, server_name="robot",
                              plaintext=args.plaintext)  # fmt: skip
    try:
        client = RobotClient(RobotEndpoints(args.commands, args.state), security)
        publisher = CameraPublisher(args.endpoint, SecurityConfig(
            keys_dir=args.keys, name=args.key, plaintext=args.plaintext))  # fmt: skip
    except (SecurityError, ValueError) as exc:
        raise CliError(str(exc)) from None
    mirror = TwinMirror(SceneConfig(task=args.task, cameras=specs))
    print(f"cameras: mirroring the {args.task} twin at {args.state} on {publisher.endpoint}; "
          "Ctrl-C stops", flush=True)  # fmt: skip
    start, seq, published = time.monotonic(), 0, 0
    try:
        while args.duration is None or time.monotonic() - start < args.duration:
            tick = time.monotonic()
            try:
                remote = client.latest(timeout_s=1.0)
            except TimeoutError:
                log.warning("cameras: no state from the robot server at %s yet", args.state)
                continue
            if remote.bodies is None:
                raise CliError("the robot server sends no body poses: it is not a twin")
            mirror.update(remote.state.q_rad, remote.state.gripper_width_m, remote.bodies)
            stamp = time.monotonic()
            for name, image in mirror.render().items():
                publisher.publish(Frame(image, stamp, seq, name))
                published += 1
            seq += 1
            time.sleep(max(0.0, 1.0 / args.fps - (time.monotonic() - tick)))
    except KeyboardInterrupt:
        pass
    finally:
        mirror.close()
        publisher.close()
        client.close()
    print(f"cameras: published {published} frames")
    return 0


def _run_cameras_publish(args: argparse.Namespace) -> int:
    """RealSense cameras as a stream source: each camera's newest frame, published as it comes."""
    from robot_rl.hardware.realsense import CameraUnavailableError, RealSenseCamera, RealSenseConfig
    from robot_rl.transport.camera_stream import CameraPublisher
    from robot_rl.transport.security import SecurityConfig, SecurityError

    configs = []
    for item in args.camera:
        camera_id, _, serial = item.partition("=")
        if not camera_id:
            raise CliError(f"--camera {item!r}; expected ID=SERIAL (e.g. front=123456)")
        resize = (args.resize, args.resize) if args.resize else None
        configs.append(RealSenseConfig(camera_id, serial, args.width, args.height, args.fps,
                                       resize=resize))  # fmt: skip
    cameras = []
    try:
        cameras = [RealSenseCamera(config) for config in configs]
        security = SecurityConfig(keys_dir=args.keys, name=args.key, plaintext=args.plaintext)
        publisher = CameraPublisher(args.endpoint, security, jpeg_quality=args.jpeg)
    except (CameraUnavailableError, SecurityError, ValueError) as exc:
        for camera in cameras:
            camera.close()
        raise CliError(str(exc)) from None
    print(f"cameras: {[c.camera_id for c in cameras]} on {publisher.endpoint}; Ctrl-C stops",
          flush=True)  # fmt: skip
    start, published = time.monotonic(), 0
    last = {c.camera_id: -1 for c in cameras}
    try:
        while args.duration is None or time.monotonic() - start < args.duration:
            for camera in cameras:
                frame = camera.read(newer_than_seq=last[camera.camera_id])
                last[camera.camera_id] = frame.seq
                publisher.publish(frame)
                published += 1
    except KeyboardInterrupt:
        pass
    except CameraUnavailableError as exc:
        log.error("cameras: %s", exc)
        return 1
    finally:
        for camera in cameras:
            camera.close()
        publisher.close()
    print(f"cameras: published {published} frames")
    return 0


def _run_cameras_list(args: argparse.Namespace) -> int:
    from robot_rl.hardware import realsense

    try:
        devices = realsense.list_devices(realsense.load_backend())
    except realsense.CameraUnavailableError as exc:
        print(f"cameras: {exc}")
        return 1
    if not devices:
        print("cameras: no RealSense camera connected (check the USB 3 cable and `lsusb`)")
        return 1
    for device in devices:
        print(f"{device['serial']}  {device['name']}  firmware {device['firmware']}")
    return 0


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_bench,
    _add_demo,
    _add_train,
    _add_eval,
    _add_record,
    _add_keys,
    _add_cameras,
    _add_learner,
    _add_actor,
    _add_robot_server,
    _add_reward,
    add_session,
)


def _configure_logging() -> bool:
    """Send log records to stderr, unless the caller (an app, pytest) has set up logging already."""
    if logging.getLogger().handlers:
        return False
    logging.basicConfig(
        level=logging.WARNING,
        format="robot-rl: %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return True


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand in ``SUBCOMMANDS``."""
    parser = _Parser(
        prog="robot-rl",
        description="Human-in-the-loop RL for robot arms, with a PyBullet twin of a Panda.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
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


if __name__ == "__main__":
    sys.exit(main())
