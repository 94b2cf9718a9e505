"""``robot-rl reward collect | train | eval | relabel``: success detectors. The workflows live in
``robot_rl.rewards.workflows``; this module only turns flags into their arguments."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from robot_rl.bench.report import print_table
from robot_rl.cli.bench import write_report
from robot_rl.cli.errors import CliError
from robot_rl.cli.flags import add_config_flags, at_least
from robot_rl.cli.record import add_operator_flags

BAD_MODEL = (FileNotFoundError, KeyError, ValueError)  # MissingWeightsError is a FileNotFoundError


def add(subparsers: argparse._SubParsersAction) -> None:
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
    add_config_flags(collect, "TrainConfig (its env, teleop and console: a robot is env.remote "
                     "with camera_endpoints)")  # fmt: skip
    add_operator_flags(collect)
    collect.set_defaults(handler=run_collect)
    helps = {
        "train": "fit and calibrate a probe (default) or a fine-tuned classifier",
        "eval": "metrics and a PR curve of a trained reward model",
        "relabel": "add the episodes a model fired wrongly on to the training data, refit",
    }
    for name, helptext in helps.items():
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
    for name in ("train", "relabel"):
        p = actions.choices[name]
        p.add_argument("--success-prompt", action="append", help="probe: success prompts")
        p.add_argument("--baseline-prompt", action="append", help="probe: baseline prompts")
        p.add_argument("--steps", type=int, default=1500, help="classifier: gradient steps")
    train = actions.choices["train"]
    train.add_argument("--kind", choices=("probe", "classifier"), default="probe")
    train.add_argument("--precision", type=float, default=0.99, help="target precision")
    train.add_argument("--max-positives", type=int, default=200)
    train.add_argument("--encoder", choices=("conv", "resnet10"), default="conv",
                       help="classifier: per-camera CNN")  # fmt: skip
    train.add_argument("--input-size", type=int, default=64, help="classifier: frame size")
    train.add_argument("--pretrained-encoder", help="classifier: backbone weights file")
    train.add_argument("--freeze-encoder", action="store_true")
    train.set_defaults(handler=run_train)
    actions.choices["eval"].add_argument("--png", type=Path, help="PR curve image")
    actions.choices["eval"].set_defaults(handler=run_eval)
    relabel = actions.choices["relabel"]
    relabel.add_argument("--new", type=Path, required=True,
                         help="new labelled frames to check the model on (.npz)")  # fmt: skip
    relabel.add_argument("--out-data", type=Path, required=True, help="merged dataset to write")
    relabel.add_argument("--refit", type=Path, help="refit on the merged data, write here")
    relabel.set_defaults(handler=run_relabel)


def _report(report: dict[str, float], title: str, path: Path | None) -> None:
    """Print ``report``; write it to ``path`` leaving undefined (NaN) metrics out (no positives
    held out, say)."""
    print_table(report, title=title)
    write_report(path, {k: v for k, v in report.items() if v == v})


def run_collect(args: argparse.Namespace) -> int:
    from robot_rl.rewards.dataset import collect_twin

    at_least("episodes", args.episodes, 2, " (successes and failures)")
    if args.teleop:
        data = _collect_teleop(args)
    else:
        try:
            data = collect_twin(args.task, args.episodes, tuple(args.cameras.split(",")),
                                args.size, args.seed)  # fmt: skip
        except (KeyError, ValueError) as exc:
            raise CliError(str(exc)) from None
    data.save(args.out)
    print(f"collected {len(data)} frames ({int(data.label.sum())} positive) into {args.out}")
    return 0


def _collect_teleop(args: argparse.Namespace) -> Any:
    """Frames labelled by the operator's console marks while they drive (sim or a robot)."""
    from robot_rl.cli.record import make, operator, session_config
    from robot_rl.runtime.record import collect_teleop

    train = session_config(args, task=args.task, obs="pixels",
                           cameras=tuple(args.cameras.split(",")), image_width=args.size,
                           image_height=args.size)  # fmt: skip
    env = make(train.env)
    try:
        setup = operator(env, train, args, True, list(train.env.cameras))
    except CliError:
        env.close()
        raise
    print("drive the arm; press y on the console when the task is done, n to give up")
    try:
        return collect_teleop(env, setup.bridge.operator.device, setup.bridge.operator.config,
                              setup.hub, args.episodes, seed=args.seed)  # fmt: skip
    finally:
        setup.close()
        env.close()


def _load_dataset(path: Path) -> Any:
    from robot_rl.rewards.dataset import FrameDataset

    try:
        return FrameDataset.load(path)
    except (FileNotFoundError, ValueError) as exc:  # the message names the file
        raise CliError(str(exc)) from None


def _backbone(args: argparse.Namespace) -> Any:
    from robot_rl.rewards.detector import BackboneSource

    return BackboneSource(args.backbone or "", args.model_name, args.preprocess)


def _scored(args: argparse.Namespace, data: Any) -> tuple[Any, Any]:
    """The model of --model and its scores over ``data``."""
    from robot_rl.rewards.detector import load_scorer
    from robot_rl.rewards.workflows import dataset_cameras, score_dataset

    try:
        scorer = load_scorer(args.model, _backbone(args), dataset_cameras(data))
    except BAD_MODEL as exc:
        raise CliError(str(exc)) from None
    try:
        return scorer, score_dataset(scorer, data, args.k)
    except (KeyError, ValueError) as exc:
        raise CliError(f"cannot score {args.data} with {args.model}: {exc}") from None


def _options(args: argparse.Namespace) -> Any:
    from robot_rl.rewards.workflows import FitOptions

    at_least("k", args.k, 1)
    return FitOptions(getattr(args, "precision", 0.99), getattr(args, "max_positives", 200),
                      args.steps, args.k)  # fmt: skip


def run_train(args: argparse.Namespace) -> int:
    from robot_rl.rewards.classifier import ClassifierConfig
    from robot_rl.rewards.workflows import dataset_cameras, fit_classifier, fit_probe

    data = _load_dataset(args.data)
    try:
        if args.kind == "classifier":
            config = ClassifierConfig(
                tuple(dataset_cameras(data)), input_size=args.input_size, encoder=args.encoder,
                pretrained_encoder=args.pretrained_encoder, freeze_encoder=args.freeze_encoder,
            )  # fmt: skip
            report = fit_classifier(data, args.model, config, _options(args))
        else:
            report = fit_probe(data, args.model, _backbone(args), args.success_prompt or (),
                               args.baseline_prompt or (), _options(args))  # fmt: skip
    except BAD_MODEL as exc:
        raise CliError(str(exc)) from None
    _report(report, f"{args.kind} {args.model} (held-out episodes)", args.json)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from robot_rl.rewards.training import pr_curve_png

    data = _load_dataset(args.data)
    _, scored = _scored(args, data)
    _report(scored.report(data), f"{args.model} on {args.data}", args.json)
    if args.png:
        print(f"PR curve: {pr_curve_png(scored.probs, data.label, scored.threshold, args.png)}")
    return 0


def run_relabel(args: argparse.Namespace) -> int:
    from robot_rl.rewards.workflows import refit, relabel

    base, new = _load_dataset(args.data), _load_dataset(args.new)
    scorer, scored = _scored(args, new)
    try:
        result = relabel(base, new, scored)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    result.merged.save(args.out_data)
    print(f"{len(result.found.episodes)} episode(s) of {args.new} fired wrongly; "
          f"{len(result.merged) - len(base)} frames added: {args.out_data}")  # fmt: skip
    report = {f"before_{k}": v for k, v in result.before.items()}
    report["false_positive_episodes"] = float(len(result.found.episodes))
    if args.refit:
        try:
            refitted = refit(scorer, result.merged, args.refit, _backbone(args),
                             args.success_prompt or (), args.baseline_prompt or (),
                             _options(args))  # fmt: skip
        except BAD_MODEL as exc:
            raise CliError(str(exc)) from None
        report.update({f"refit_{k}": v for k, v in refitted.items()})
        print(f"refit: {args.refit}")
    _report(report, "relabel", args.json)
    return 0
