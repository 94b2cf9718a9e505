"""``robot-rl bench reward``: success detectors on held-out pick_cube and peg_insert episodes.

Per task: labelled frames of ``episodes`` twin episodes (``rewards.dataset.collect_twin``: half
scripted expert, half pushed-off expert; labels from the ground-truth predicate; two 128x128
cameras), split by episode (stratified) into 60% training and 40% test episodes. The fine-tuned
classifier (``rewards.classifier``, the HIL-SERL recipe) is trained on at most 200 positive frames,
calibrated (temperature, threshold for precision 0.99) on a part of the training episodes, and
judged on the test episodes through the decision layer (k = 3 frames).

The headline keys are the worse of the two tasks (lowest precision, recall, episode recall, event
precision and AUROC; highest ECE, false-success and premature rates); per-task keys carry the
task's name. ``precision`` and ``recall`` are per frame at the threshold; ``event_precision`` is
the share of the decision layer's success events that land on success frames.

Latency, CPU: ``frame_latency_ms_p95`` is one observation (both cameras at 128x128, resize
included) through the whole classifier, ``head_latency_ms_p95`` its MLP head alone. The CLIP
path is timed too (``clip_*``): open_clip ViT-B-32 built with random weights, used for *timing
only* (no pretrained weights can be fetched here; scores from random weights would mean nothing),
plus the probe head on its embeddings.

Collected datasets are cached in ``run_dir`` (default ``runs/bench_reward``) by task, episode
count and seed, so a rerun skips the rendering (about 65 ms per frame on this CPU).
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

TASKS = ("pick_cube", "peg_insert")
WORSE_IS_LOWER = ("precision", "recall", "episode_recall", "auroc", "event_precision")
WORSE_IS_HIGHER = ("ece", "episode_false_success_rate", "episode_premature_rate")


def _collect_to(path: str, task: str, episodes: int, seed: int) -> str:
    from robot_rl.rewards.dataset import collect_twin

    collect_twin(task, episodes, seed=seed).save(path)
    return path


def _datasets(episodes: int, seed: int, cache: Path, parallel: bool) -> dict:
    from robot_rl.rewards.dataset import FrameDataset

    cache.mkdir(parents=True, exist_ok=True)
    paths = {t: cache / f"{t}_e{episodes}_s{seed}.npz" for t in TASKS}
    todo = [t for t in TASKS if not paths[t].is_file()]
    if todo and parallel:  # one process per task: pybullet renders on one core each
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(len(todo), mp_context=context) as pool:
            futures = [pool.submit(_collect_to, str(paths[t]), t, episodes, seed) for t in todo]
            for future in futures:
                future.result()
    else:
        for t in todo:
            _collect_to(str(paths[t]), t, episodes, seed)
    return {t: FrameDataset.load(paths[t]) for t in TASKS}


def _p95_ms(fn, repeats: int) -> float:  # noqa: ANN001 - a zero-argument callable
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.percentile(times, 95) * 1e3)


def _clip_latency(repeats: int) -> dict[str, float]:
    """ViT-B-32 (random weights, timing only) on two cameras, and a probe head on its output."""
    from robot_rl.extras import require

    open_clip = require("open_clip", "clip", "robot-rl bench reward")

    from robot_rl.rewards.backbone import ClipBackbone, Preprocess
    from robot_rl.rewards.probe import ProbeScorer

    model = open_clip.create_model("ViT-B-32", pretrained=None)
    backbone = ClipBackbone(model, None, Preprocess.from_config({}, 224), "ViT-B-32 (random)")
    frames = np.random.default_rng(0).integers(0, 256, (1, 128, 128, 3), np.uint8)
    probe = ProbeScorer(torch.randn(2 * backbone.embed_dim), 0.0)
    x = torch.randn(1, 2 * backbone.embed_dim)
    return {
        "clip_vit_b32_frame_latency_ms_p95": _p95_ms(
            lambda: probe.probability(
                torch.cat([backbone.embed_images(frames), backbone.embed_images(frames)], -1)
            ),
            repeats,
        ),
        "clip_probe_head_latency_ms_p95": _p95_ms(lambda: probe.probability(x), repeats * 10),
    }


def run_reward_bench(
    seed: int = 0, quick: bool = False, steps: int | None = None, run_dir: str | None = None
) -> dict[str, float | str]:
    from robot_rl.rewards.calibration import split_by_episode
    from robot_rl.rewards.classifier import ClassifierConfig, TrainConfig, train_classifier
    from robot_rl.rewards.decision import DecisionConfig
    from robot_rl.rewards.training import evaluate

    episodes = 6 if quick else 120
    train_steps = steps or (60 if quick else 1500)
    cache = Path(run_dir or "runs/bench_reward")
    datasets = _datasets(episodes, seed, cache, parallel=not quick)
    results: dict[str, float | str] = {}
    per_task: dict[str, dict[str, float]] = {}
    model = None
    for task, data in datasets.items():
        train_mask, test_mask = split_by_episode(data.episode, 0.4, seed, data.label)
        train, test = data.subset(train_mask), data.subset(test_mask)
        config = ClassifierConfig(tuple(data.meta["cameras"]))
        model, fit = train_classifier(train, config, TrainConfig(steps=train_steps, seed=seed))
        probs = model.score(test.frames)
        decision = DecisionConfig.from_threshold(model.threshold, k=3)
        report = evaluate(probs, test.label, test.episode, model.threshold, test.step, decision)
        per_task[task] = report
        results.update({f"{task}_{k}": v for k, v in report.items() if v == v})
        results[f"{task}_train_positives"] = fit["fit_positives"]
        results[f"{task}_fit_s"] = round(fit["fit_s"], 1)
    for key in WORSE_IS_LOWER + WORSE_IS_HIGHER:
        values = [r[key] for r in per_task.values() if r[key] == r[key]]
        if values:
            results[key] = min(values) if key in WORSE_IS_LOWER else max(values)
    results["test_failed_episodes"] = sum(r["failed_episodes"] for r in per_task.values())
    results["test_success_episodes"] = sum(r["success_episodes"] for r in per_task.values())
    assert model is not None
    repeats = 20 if quick else 200
    one = {c: np.zeros((1, 128, 128, 3), np.uint8) for c in model.cameras}
    latent = torch.zeros(1, len(model.cameras) * model.config.latent_dim)
    with torch.no_grad():
        results["frame_latency_ms_p95"] = _p95_ms(lambda: model.score(one), repeats)
        results["head_latency_ms_p95"] = _p95_ms(lambda: model.head(latent), repeats * 10)
    if not quick:
        results.update(_clip_latency(repeats // 4))
    results["backbone"] = (
        f"fine-tuned {model.config.encoder} CNN per camera (HIL-SERL recipe), "
        f"{model.config.input_size}px, cameras {','.join(model.cameras)}; no pretrained CLIP here"
    )
    results.update(episodes_per_task=episodes, train_steps=train_steps, k=3, seed=seed,
                   torch_threads=torch.get_num_threads())  # fmt: skip
    return results
