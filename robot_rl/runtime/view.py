"""See recorded episodes in rerun (``robot-rl view EPISODE_OR_RUN``; optional extra ``viewer``).

What is logged, per episode step t (timelines ``step``, counted over every episode shown, and
``episode_step``, from 0 in each episode; ``time`` is ``episode_step * policy_period_s``):

  ``cameras/<name>``        Image     the frame the policy saw at step t (obs_t); obs_T at the end
  ``tcp/position``          Points3D  the TCP position, m, in the episode's reset frame (twin tasks)
  ``tcp/trajectory/<ep>``   LineStrips3D  the whole episode's TCP path, static (twin tasks)
  ``action/<dim>``          Scalars   the executed action, [-1, 1] (x, y, z, [rx, ry, rz,] gripper)
  ``control/operator``      Scalars   1 while the operator (or intervener) was in control, else 0
  ``control/log``           TextLog   "operator takes over" / "policy takes back"
  ``reward``                Scalars   the step's reward
  ``detector/score``        Scalars   the success detector's probability (with a detector)
  ``episode``               TextLog   its file, task, length, end (terminated/truncated/open)

The TCP position is read from the twin's state vector (its first three entries, in
``xyz_step_m`` units of the reset frame; see ``robot_rl.envs.twin_env``), so it is logged only
for episodes of the twin's tasks. The detector's score is not stored in episode files: it is
computed here when a detector is given (``--detector``, or a run's ``env.reward_model``).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import yaml

from robot_rl.data.batch import STATE_KEY, image_keys
from robot_rl.data.episodes import EPISODE_RE, Episode, EpisodeFormatError, load_episode
from robot_rl.extras import require

log = logging.getLogger(__name__)

TWIN_TASKS = ("reach", "pick_cube", "peg_insert")
DEFAULT_XYZ_STEP_M = 0.03  # TwinEnvConfig's default, for episodes without their run's config
DEFAULT_POLICY_PERIOD_S = 0.1


class Detector(Protocol):
    """A success detector as the viewer uses it (``robot_rl.rewards.detector.SuccessDetector``)."""

    def reset(self) -> None: ...

    def step(self, frames: dict[str, np.ndarray], gate: bool = True) -> tuple[bool, float]: ...


@dataclass(frozen=True)
class ViewSource:
    """The episodes to show and what their run says about them."""

    episodes: list[Path]
    xyz_step_m: float = DEFAULT_XYZ_STEP_M
    policy_period_s: float = DEFAULT_POLICY_PERIOD_S
    rotation_actions: bool = False
    reward_model: str | None = None


def find_episodes(target: str | Path, demos: bool = False) -> ViewSource:
    """The episode files ``target`` names: one ``episode_*.npz``, a folder of them, or a run
    directory (its ``episodes/``, or ``demos/`` with ``demos=True``; its config.yaml gives the
    action step size and period). FileNotFoundError names what was looked for."""
    target = Path(target)
    if target.is_file():
        return ViewSource([target])
    if not target.is_dir():
        raise FileNotFoundError(f"{target} is neither an episode file nor a directory")
    settings: dict[str, Any] = {}
    folder = target
    config = target / "config.yaml"
    if config.is_file():
        folder = target / ("demos" if demos else "episodes")
        env = (yaml.safe_load(config.read_text()) or {}).get("env", {}) or {}
        for key in ("xyz_step_m", "policy_period_s", "rotation_actions", "reward_model"):
            if key in env:
                settings[key] = env[key]
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist")
    files = sorted(p for p in folder.iterdir() if EPISODE_RE.match(p.name))
    if not files:
        raise FileNotFoundError(f"no episode_*.npz files in {folder}")
    return ViewSource(files, **settings)


def action_names(dims: int, rotation_actions: bool) -> list[str]:
    """Names of the action dims: x, y, z, [rx, ry, rz,] gripper for the twin's layout."""
    if dims == 4 or (dims == 7 and rotation_actions):
        return ["x", "y", "z", *(["rx", "ry", "rz"] if dims == 7 else []), "gripper"]
    return [str(i) for i in range(dims)]


def log_episode(
    rec: Any,
    episode: Episode,
    first_step: int,
    source: ViewSource,
    detector: Detector | None = None,
) -> int:
    """Log one episode into rerun recording ``rec``; returns the next free global step."""
    rr = require("rerun", "viewer", "robot-rl view")
    steps = episode.transitions
    frames = [steps[0].obs] + [t.next_obs for t in steps]
    cameras = image_keys(frames[0])
    name = episode.path.stem
    task = str(episode.meta.get("task", ""))
    end = "terminated" if steps[-1].terminated else "truncated" if steps[-1].truncated else "open"
    twin = task in TWIN_TASKS
    tcp = None
    if twin:
        tcp = np.stack([f[STATE_KEY][:3] for f in frames]).astype(np.float64) * source.xyz_step_m
    names = action_names(len(steps[0].action), source.rotation_actions)
    if detector is not None:
        detector.reset()

    rec.set_time("step", sequence=first_step)
    rec.log(
        "episode",
        rr.TextLog(f"{name}: task {task or '?'}, {len(steps)} steps, {end}"),
    )
    if tcp is not None:
        rec.log(f"tcp/trajectory/{name}", rr.LineStrips3D([tcp]), static=True)
    operator = False
    for t, frame in enumerate(frames):
        rec.set_time("step", sequence=first_step + t)
        rec.set_time("episode_step", sequence=t)
        rec.set_time("time", duration=t * source.policy_period_s)
        for cam in cameras:
            rec.log(f"cameras/{cam}", rr.Image(frame[cam]))
        if tcp is not None:
            rec.log("tcp/position", rr.Points3D([tcp[t]], radii=0.005))
        if detector is not None and cameras:
            _, score = detector.step({cam: frame[cam] for cam in cameras})
            rec.log("detector/score", rr.Scalars(float(score)))
        if t == len(steps):
            break  # the final frame has no action
        step = steps[t]
        for dim, value in zip(names, np.asarray(step.action, np.float64), strict=True):
            rec.log(f"action/{dim}", rr.Scalars(float(value)))
        rec.log("reward", rr.Scalars(float(step.reward)))
        rec.log("control/operator", rr.Scalars(float(step.intervened)))
        if step.intervened != operator:
            operator = step.intervened
            text = "operator takes over" if operator else "policy takes back"
            rec.log("control/log", rr.TextLog(text))
    return first_step + len(frames)


def select(files: Sequence[Path], episodes: Iterable[int] = (), last: int | None = None) -> list:
    """Episode files by number (``episode_000042.npz`` is 42), or the ``last`` ones."""
    wanted = list(episodes)
    if wanted:
        by_number = {int(EPISODE_RE.match(p.name).group(1)): p for p in files}
        missing = sorted(set(wanted) - set(by_number))
        if missing:
            raise FileNotFoundError(
                f"episodes {missing} not found; have {min(by_number)}..{max(by_number)}"
            )
        return [by_number[n] for n in wanted]
    if last is not None:
        if last < 1:
            raise ValueError(f"last={last}; show at least 1 episode")
        return list(files[-last:])
    return list(files)


def view(
    target: str | Path,
    *,
    save: str | Path | None = None,
    episodes: Iterable[int] = (),
    last: int | None = 20,
    demos: bool = False,
    detector: Detector | str | None = None,
    spawn: bool = True,
) -> int:
    """Log the episodes of ``target`` to rerun: into ``save`` (a ``.rrd`` file to open later with
    ``rerun FILE``), or, without it, to a spawned viewer. Returns the number of episodes shown.

    ``detector``: a detector, or a path for ``rewards.detector.load_detector``; default, the
    run's ``env.reward_model`` if it names one that exists."""
    rr = require("rerun", "viewer", "robot-rl view")
    source = find_episodes(target, demos)
    files = select(source.episodes, episodes, None if list(episodes) else last)
    if isinstance(detector, str | Path) or (detector is None and source.reward_model):
        path = Path(detector or source.reward_model)
        if path.exists():
            from robot_rl.rewards.detector import load_detector

            detector = load_detector(path)
        elif detector is not None:
            raise FileNotFoundError(f"detector {path} does not exist")
        else:
            log.warning("the run's reward_model %s is not on this machine; no scores", path)
            detector = None
    if save is not None:
        save = Path(save)
        if save.suffix != ".rrd":
            raise ValueError(f"save={save}; rerun files end in .rrd")
    elif spawn and sys.platform.startswith("linux") and not _has_display():
        raise ValueError("no display here for the rerun viewer (DISPLAY and WAYLAND_DISPLAY are "
                         "unset); write a file with --save FILE.rrd and open it with rerun FILE "
                         "where there is one")  # fmt: skip
    # The first episode is read before the viewer starts: a damaged or hostile file is one line,
    # not a viewer opened on nothing. A later one is skipped with an error line.
    episodes = [(files[0], load_episode(files[0]))] if files else []
    rec = rr.RecordingStream("robot-rl", recording_id=re.sub(r"\W", "_", str(target)))
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        rec.save(str(save))
    elif spawn:
        rec.spawn()
    rec.log("/", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
    step = shown = 0
    for path, (transitions, meta) in itertools.chain(episodes, _readable(files[1:])):
        step = log_episode(rec, Episode(path, transitions, meta), step, source, detector)
        shown += 1
    rec.flush()
    if save is not None:
        rec.disconnect()
    return shown


def _readable(files: Sequence[Path]) -> Iterator[tuple[Path, Any]]:
    """Each file's ``load_episode`` result in turn; a damaged one is logged and skipped."""
    for path in files:
        try:
            yield path, load_episode(path)
        except (EpisodeFormatError, OSError) as exc:
            log.error("skipped: %s", exc)


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


__all__ = ["ViewSource", "action_names", "find_episodes", "log_episode", "view"]
