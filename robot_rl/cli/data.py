"""``robot-rl data export|import --format lerobot``: episodes to and from LeRobotDataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from robot_rl.cli.errors import CliError
from robot_rl.cli.flags import at_least

FORMATS = ("lerobot",)


def add(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="move episodes in and out (LeRobotDataset)")
    commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    export = commands.add_parser(
        "export", help="write a run's episodes (or an episode folder) as a LeRobotDataset"
    )
    export.add_argument("source", type=Path, help="a run directory or a folder of episode_*.npz")
    export.add_argument("out", type=Path, help="the new dataset folder (must not exist)")
    export.add_argument("--format", choices=FORMATS, default="lerobot")
    export.add_argument("--demos", action="store_true", help="a run's demos/ (default episodes/)")
    export.add_argument("--fps", type=int, default=10, help="frames per second (default 10)")
    export.add_argument("--task", help="the language task of every frame (default: the meta's)")
    export.add_argument("--images", action="store_true",
                        help="store cameras as PNG images instead of video")  # fmt: skip
    export.set_defaults(handler=run_export)

    imp = commands.add_parser(
        "import", help="a LeRobotDataset as robot-rl demo episodes (for train's demo buffer)"
    )
    imp.add_argument("dataset", type=Path, help="a LeRobotDataset folder (meta/info.json)")
    imp.add_argument("--out", type=Path, required=True, help="folder for the episode files")
    imp.add_argument("--format", choices=FORMATS, default="lerobot")
    imp.add_argument("--task", help="task label of the episodes (default: the dataset's task)")
    imp.add_argument("--config", type=Path,
                     help="a training config with env.id: the dataset's actions are in that "
                     "env's units and are mapped through its adapter")  # fmt: skip
    imp.set_defaults(handler=run_import)


def _episode_folder(source: Path, demos: bool) -> Path:
    if (source / "config.yaml").is_file():
        return source / ("demos" if demos else "episodes")
    if demos:
        raise CliError(f"--demos needs a run directory; {source} has no config.yaml")
    return source


def run_export(args: argparse.Namespace) -> int:
    from robot_rl.data.episodes import load_episodes
    from robot_rl.data.lerobot_io import export_lerobot
    from robot_rl.extras import MissingExtraError

    at_least("fps", args.fps, 1)
    folder = _episode_folder(args.source, args.demos)
    if not folder.is_dir():
        raise CliError(f"{folder} is not a directory of episodes")
    if args.out.exists():
        raise CliError(f"{args.out} exists; give a new folder for the dataset")
    try:
        out = export_lerobot(load_episodes(folder), args.out, fps=args.fps, task=args.task,
                             use_videos=not args.images)  # fmt: skip
    except (MissingExtraError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print(f"wrote LeRobotDataset {out}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from robot_rl.data.lerobot_io import import_lerobot
    from robot_rl.extras import MissingExtraError

    action_fn = None
    if args.config is not None:
        from robot_rl.cli.flags import load
        from robot_rl.envs.twin_env import make_env
        from robot_rl.runtime.train import TrainConfig

        env_cfg = load(TrainConfig, args.config, []).env
        if not env_cfg.id:
            raise CliError(f"{args.config}: env.id is not set; --config maps an external env's "
                           "actions (robot-rl's own datasets need none)")  # fmt: skip
        env = make_env(env_cfg)
        action_fn = env.from_env_action
    try:
        paths = import_lerobot(args.dataset, args.out, task=args.task, action_fn=action_fn)
    except (MissingExtraError, FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print(f"imported {len(paths)} episodes into {args.out}")
    return 0
