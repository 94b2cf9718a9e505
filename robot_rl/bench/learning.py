"""`robot-rl bench learning --task T --obs state|pixels [--seeds N]`: train from scratch, report
success across seeds.

Each seed is a whole training session (``robot_rl.runtime.train``) in its deterministic in-step
mode (the learner steps between env steps, so a seed fixes the run and the figures do not depend
on the machine's speed), with scripted-expert demos and the scripted intervener standing in for
the operator, evaluated deterministically along the way on seeded episodes it never trained on.

The settings (env steps, demos, UTD, discount, evaluation period) are the task's shipped config,
``robot_rl/configs/<task>_<obs>.yaml``: a task is tuned there, never here. Reported: for the final
evaluation and for every evaluation point along the run, the mean, min and max success over seeds
(``success_rate_mean`` ..., ``success_at_<steps>_mean`` ...); time spent acting (env steps and
policy), updating (learner steps) and evaluating, each summed over seeds, plus recording demos
(``setup_s``). ``run_dir`` given: each seed's run is kept there, and ``learning_curve.png`` (mean
with a min-max band over seeds) is written into it. ``quick`` shrinks everything for tests (the
figures then mean nothing).

``overrides`` (``--set KEY=VALUE``, as ``robot-rl train`` takes them) change the shipped config
for an ablation, for example ``--set demo_pretrain_updates=2000`` for the demo warm start; the
report then names them (``overrides``) beside the settings it always gives (UTD, discount, demos,
``demo_pretrain_updates``). A tuned task still belongs in its config.

``jobs`` > 1 trains that many seeds at once, each in a process of its own pinned to its share of
the cores this process may use (a seed's run is deterministic, so the figures are the same as one
after another; only the wall time changes). More jobs than cores share all of them, one torch
thread each: three seeds on two cores then take about 1.5 seed-times, not two rounds. Each worker
writes its figures as JSON (no pickle) and its log to ``<run_dir>/bench-<task>-<obs>-<seed>.log``;
the times are still summed over seeds (``wall_s`` is seed-seconds), and ``elapsed_s`` is the
bench's own wall time from start to finish, the one figure that ``jobs`` changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.agents.threads import usable_cpu_ids
from robot_rl.config import load_config
from robot_rl.runtime.train import TrainConfig, TrainingSession

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def task_config(task: str, obs: str, overrides: Sequence[str] = ()) -> TrainConfig:
    """The shipped config of ``task`` from ``obs`` (``configs/<task>_<obs>.yaml``), with
    ``key.sub=value`` ``overrides`` on top."""
    if obs not in ("state", "pixels"):
        raise ValueError(f"obs {obs!r}; choose state or pixels")
    path = CONFIG_DIR / f"{task}_{obs}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in CONFIG_DIR.glob("*_state.yaml"))
        shipped += sorted(p.stem for p in CONFIG_DIR.glob("*_pixels.yaml"))
        raise ValueError(f"no config {path.name} for task {task!r} from {obs}; shipped: {shipped}")
    return load_config(TrainConfig, path, list(overrides))  # a bad override: ConfigError


def bench_config(task: str, obs: str, steps: int | None = None, quick: bool = False,
                 overrides: Sequence[str] = ()) -> TrainConfig:  # fmt: skip
    """The shipped config of ``task`` from ``obs`` as the benchmark runs it (in-step, no
    checkpoints; ``steps``, ``quick`` and ``overrides`` as in ``run_learning_bench``)."""
    base = task_config(task, obs, overrides)
    changes: dict[str, Any] = {"concurrent": False, "checkpoint_every": 0,
                               "checkpoint_every_min": 0}  # fmt: skip
    if steps is not None:
        changes["env_steps"] = steps
    if quick:
        changes.update(env_steps=steps or 60, demos=1, learning_starts=20, batch_size=16,
                       eval_every=(steps or 60) // 2, eval_episodes=2)  # fmt: skip
    return dataclasses.replace(base, **changes)


def _seed_config(base: TrainConfig, task: str, obs: str, seed: int, root: Path) -> TrainConfig:
    return dataclasses.replace(base, seed=seed, run_dir=str(root),
                               name=f"bench-{task}-{obs}-{seed}")  # fmt: skip


def run_learning_bench(
    seed: int = 0,
    quick: bool = False,
    task: str = "reach",
    obs: str = "state",
    steps: int | None = None,
    run_dir: str | None = None,
    seeds: int = 1,
    jobs: int = 1,
    overrides: Sequence[str] = (),
) -> dict[str, float | str]:
    """Train ``task`` from ``obs`` with seeds ``seed .. seed + seeds - 1``; see the module doc."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds={seeds!r}; allowed: an integer >= 1")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r}; allowed: an integer >= 1")
    overrides = list(overrides)
    started = time.perf_counter()
    base = bench_config(task, obs, steps, quick, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(run_dir or tmp)
        if jobs == 1 or seeds == 1:
            runs = [_one_seed(_seed_config(base, task, obs, s, root))
                    for s in range(seed, seed + seeds)]  # fmt: skip
        else:
            spec = {"task": task, "obs": obs, "steps": steps, "quick": quick,
                    "overrides": overrides}  # fmt: skip
            runs = _parallel_seeds(spec, list(range(seed, seed + seeds)), jobs, root)
        result: dict[str, float | str] = {**_summary(runs, base, task, obs, seed, seeds)}
        result["jobs"] = float(min(jobs, seeds))
        result["elapsed_s"] = time.perf_counter() - started
        result["overrides"] = " ".join(overrides)
        if run_dir is not None:
            title = f"{task} ({obs}), {seeds} seeds" + "".join(f", {o}" for o in overrides)
            plot_curves(runs, root / "learning_curve.png", title)
    return result


def cpu_groups(cpus: list[int], jobs: int) -> list[tuple[set[int], int]]:
    """One ``(cores, torch threads)`` slot per seed trained at once. ``jobs`` <= cores: the cores
    split into ``jobs`` disjoint groups (round robin), each seed its group's size in threads.
    More jobs than cores: every seed may run on all of them with one thread (the OS shares them;
    pinning would leave one core with two seeds while another finishes and idles)."""
    if len(cpus) >= jobs:
        groups = [set(cpus[i::jobs]) for i in range(jobs)]
        return [(g, len(g)) for g in groups]
    return [(set(cpus), 1) for _ in range(jobs)]


def _parallel_seeds(spec: dict[str, Any], seeds: list[int], jobs: int,
                    root: Path) -> list[dict[str, Any]]:  # fmt: skip
    """Train ``seeds``, ``jobs`` at a time, each in a worker process (``python -m
    robot_rl.bench.learning``) pinned to a core group; their results, in seed order."""
    groups = cpu_groups(usable_cpu_ids(), jobs)
    root.mkdir(parents=True, exist_ok=True)
    pending = list(seeds)
    running: dict[int, tuple[subprocess.Popen[bytes], int, Path, Path]] = {}  # group -> worker
    results: dict[int, dict[str, Any]] = {}
    try:
        while pending or running:
            for group in range(len(groups)):
                if group in running or not pending:
                    continue
                s = pending.pop(0)
                out = root / f"bench-{spec['task']}-{spec['obs']}-{s}.result.json"
                log_path = root / f"bench-{spec['task']}-{spec['obs']}-{s}.log"
                cores, threads = groups[group]
                with open(log_path, "wb") as log_file:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "robot_rl.bench.learning",
                         json.dumps({**spec, "seed": s, "root": str(root), "threads": threads}),
                         str(out)],
                        stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=_pin(cores),
                    )  # fmt: skip
                print(f"bench learning: seed {s} started on cpus {sorted(cores)}, {threads} torch "
                      f"thread(s); log {log_path}", flush=True)  # fmt: skip
                running[group] = (proc, s, out, log_path)
            time.sleep(0.5)
            for group, (proc, s, out, log_path) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                del running[group]
                if code != 0 or not out.is_file():
                    tail = log_path.read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"bench learning: seed {s} failed (exit {code}): {tail}")
                results[s] = json.loads(out.read_text())
                print(f"bench learning: seed {s} done: success "
                      f"{results[s]['final']['success_rate']:.2f}", flush=True)  # fmt: skip
    finally:
        for proc, *_ in running.values():
            proc.kill()
            proc.wait()
    return [results[s] for s in seeds]


def _pin(cpus: set[int]) -> Any:
    def pin() -> None:
        with contextlib.suppress(AttributeError, OSError):  # none here: the cores are shared
            os.sched_setaffinity(0, cpus)

    return pin


def _worker(spec_json: str, out: str) -> None:
    """One seed of a parallel run (``_parallel_seeds``): its figures as JSON to ``out``."""
    spec = json.loads(spec_json)
    base = bench_config(spec["task"], spec["obs"], spec["steps"], spec["quick"],
                        spec.get("overrides", []))  # fmt: skip
    config = _seed_config(base, spec["task"], spec["obs"], spec["seed"], Path(spec["root"]))
    run = _one_seed(config, spec.get("threads"))
    tmp = Path(out + ".tmp")
    tmp.write_text(json.dumps(run, default=float))
    tmp.replace(out)


def _one_seed(config: TrainConfig, cpus: int | None = None) -> dict[str, Any]:
    """One session (its torch threads budgeted on ``cpus`` cores, default those it may run on),
    with its time split into setup, updating, evaluating and acting."""
    start = time.perf_counter()
    session = TrainingSession(config, cpus=cpus)
    setup_s = time.perf_counter() - start
    spent = {"update": 0.0, "eval": 0.0}

    def timed(key: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - t

        return wrapper

    session.core.learn_once = timed("update", session.core.learn_once)  # type: ignore[method-assign]
    session.evaluate = timed("eval", session.evaluate)  # type: ignore[method-assign]
    start = time.perf_counter()
    final = session.run()
    run_s = time.perf_counter() - start
    return {
        "final": final,
        "curve": [(int(e["env_steps"]), e["success_rate"]) for e in session.evaluations],
        "env_steps": session.counters.env_steps,
        "updates": session.counters.updates,
        "interventions": session.counters.interventions,
        "setup_s": setup_s,
        "run_s": run_s,
        "update_s": spent["update"],
        "eval_s": spent["eval"],
        "act_s": run_s - spent["update"] - spent["eval"],
    }


def _summary(runs: list[dict[str, Any]], config: TrainConfig, task: str, obs: str, seed: int,
             seeds: int) -> dict[str, float]:  # fmt: skip
    finals = np.array([r["final"]["success_rate"] for r in runs])
    env_steps = sum(r["env_steps"] for r in runs)
    result: dict[str, float] = {
        "success_rate_mean": float(finals.mean()),
        "success_rate_min": float(finals.min()),
        "success_rate_max": float(finals.max()),
        "success_rate": float(finals.mean()),  # the pre-seeds key: the mean
        "eval_return": float(np.mean([r["final"]["return"] for r in runs])),
        "eval_episodes": float(config.eval_episodes),
        "seeds": float(seeds),
        "first_seed": float(seed),
        "env_steps": float(config.env_steps),
        "updates_mean": float(np.mean([r["updates"] for r in runs])),
        "utd_ratio": float(config.agent.utd_ratio),
        "discount": float(config.agent.discount),
        "demos": float(config.demos),
        "demo_pretrain_updates": float(config.demo_pretrain_updates),
        "interventions": float(sum(r["interventions"] for r in runs)),
        "intervention_rate": float(sum(r["interventions"] for r in runs) / max(1, env_steps)),
        "wall_s": float(sum(r["setup_s"] + r["run_s"] for r in runs)),
        "setup_s": float(sum(r["setup_s"] for r in runs)),
        "act_s": float(sum(r["act_s"] for r in runs)),
        "update_s": float(sum(r["update_s"] for r in runs)),
        "eval_s": float(sum(r["eval_s"] for r in runs)),
        "act_s_per_env_step": float(sum(r["act_s"] for r in runs) / max(1, env_steps)),
        "pixels": 1.0 if obs == "pixels" else 0.0,
    }
    for steps, values in sorted(_points(runs).items()):
        result[f"success_at_{steps}_mean"] = float(np.mean(values))
        result[f"success_at_{steps}_min"] = float(np.min(values))
        result[f"success_at_{steps}_max"] = float(np.max(values))
    return result


def _points(runs: list[dict[str, Any]]) -> dict[int, list[float]]:
    """Evaluation point (env steps) -> success of every seed evaluated there."""
    points: dict[int, list[float]] = {}
    for run in runs:
        for steps, success in run["curve"]:
            points.setdefault(steps, []).append(success)
    return points


def plot_curves(runs: list[dict[str, Any]], path: Path, title: str) -> None:
    """Mean success over seeds against env steps, with the min-max band, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(_points(runs).items())
    steps = [s for s, _ in points]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.fill_between(steps, [min(v) for _, v in points], [max(v) for _, v in points], alpha=0.25,
                    label="min-max over seeds")  # fmt: skip
    ax.plot(steps, [float(np.mean(v)) for _, v in points], marker="o", label="mean")
    ax.set(xlabel="env steps", ylabel="eval success rate", ylim=(-0.05, 1.05), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":  # a worker of ``_parallel_seeds``
    _worker(sys.argv[1], sys.argv[2])
