"""Episodes on disk: one compressed ``.npz`` file per episode, written atomically.

File format (version 1), readable by any numpy (``np.load(path, allow_pickle=False)``); an episode
of T >= 1 steps with observation keys as in ``robot_rl.data.batch``:

  ``obs.<camera>``     uint8   (T+1, H, W, 3)  RGB frames obs_0 .. obs_T, one entry per camera
  ``obs.state``        float32 (T+1, D)        state vectors obs_0 .. obs_T
  ``action``           float32 (T, A)          action taken at step t, in [-1, 1]
  ``reward``           float32 (T,)            task reward of step t
  ``terminated``       bool    (T,)            true terminal state reached at step t (last only)
  ``truncated``        bool    (T,)            time limit at step t (last only; not terminal)
  ``intervened``       bool    (T,)            the operator / intervener chose the action
  ``gripper_penalty``  float32 (T,)            gripper toggle penalty of step t, >= 0
  ``meta``             str     ()              JSON object: ``format_version`` (1), ``task``,
                                               ``created_utc`` (ISO 8601), ``num_steps`` (T),
                                               plus any JSON keys the writer adds

Step t is (obs_t, action_t, reward_t, obs_{t+1}); the final frame obs_T is the environment's true
last observation (also after a time limit), never a reset frame. An episode may end without either
flag (saved when recording stopped); loading it gives an open episode.

Reading is defensive: before any array is read, every member of the archive must be a ``.npy``
whose header (shape, dtype) agrees with the size the archive declares for it, and the declared
sizes must stay under ``max_bytes`` (so a shape claiming terabytes or a deflate bomb is refused
before it costs memory); meta must be a JSON object of bounded size and depth whose seq fields are
ints; the floats must be finite. ``load_episodes`` moves a file that fails any of this into
``quarantine/`` next to it, with a ``.reason.txt`` and a logged error, and loads the rest.

Files are named ``episode_000042.npz``, numbered after the highest number present. A file is
written to a hidden temporary name in the same directory (``.episode_000042.npz.<random>.tmp``),
flushed and fsynced, then renamed with ``os.replace``, so a crash leaves either the complete file
or a temporary file that ``load_episodes`` skips with a warning; earlier episodes are never touched.
One writer per directory.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.data.batch import STATE_KEY, Transition, image_keys

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAX_EPISODE_BYTES = 4 * 1024**3  # the most an episode file may unpack to (about 25k 128x128 steps
#                                   with two cameras); larger files are refused unread
MAX_MEMBERS = 64
MAX_META_CHARS = 1 << 20
MAX_META_DEPTH = 16
MAX_SEQ = 2**53
QUARANTINE_DIR = "quarantine"
EPISODE_RE = re.compile(r"^episode_(\d{6,})\.npz$")
TMP_SUFFIX = ".tmp"
RESERVED_META = ("format_version", "created_utc", "num_steps")
STEP_KEYS = {  # per-step entries: dtype and trailing shape after (T,)
    "action": (np.float32, None),  # (T, A), A from the file
    "reward": (np.float32, ()),
    "terminated": (np.bool_, ()),
    "truncated": (np.bool_, ()),
    "intervened": (np.bool_, ()),
    "gripper_penalty": (np.float32, ()),
}


class EpisodeFormatError(ValueError):
    """An episode file that is unreadable or breaks the format; the message names file and key."""


@dataclass(frozen=True)
class Episode:
    """One loaded episode: where it came from, its steps in order, and its meta."""

    path: Path
    transitions: list[Transition]
    meta: dict[str, Any]


def episode_path(directory: str | Path, number: int) -> Path:
    """``directory / episode_{number:06d}.npz``."""
    return Path(directory) / f"episode_{number:06d}.npz"


def _numbered(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for p in directory.iterdir():
        m = EPISODE_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _is_temp(p: Path) -> bool:
    return p.name.startswith(".episode_") and p.name.endswith(TMP_SUFFIX)


def episode_arrays(transitions: list[Transition]) -> dict[str, np.ndarray]:
    """The format's per-step arrays for a list of consecutive steps (without ``meta``).

    Raises ValueError when the list is empty, a step does not continue the previous one (state
    differs from the previous next_obs), only a non-final step ends the episode, or keys/shapes
    change inside the episode.
    """
    if not transitions:
        raise ValueError("an episode needs at least one transition")
    keys = sorted(transitions[0].obs)
    if STATE_KEY not in keys:
        raise ValueError(f"obs has keys {keys}; a '{STATE_KEY}' entry is required")
    for i, t in enumerate(transitions):
        for name, obs in (("obs", t.obs), ("next_obs", t.next_obs)):
            if sorted(obs) != keys:
                raise ValueError(f"step {i}: {name} has keys {sorted(obs)}; step 0 has {keys}")
        if i + 1 < len(transitions) and (t.terminated or t.truncated):
            raise ValueError(f"step {i} of {len(transitions)} ends the episode; only the last may")
        if i > 0 and not np.array_equal(
            np.asarray(t.obs[STATE_KEY], dtype=np.float32),
            np.asarray(transitions[i - 1].next_obs[STATE_KEY], dtype=np.float32),
            equal_nan=True,
        ):
            raise ValueError(f"step {i}: obs['{STATE_KEY}'] is not step {i - 1}'s next_obs")
    frames = [transitions[0].obs] + [t.next_obs for t in transitions]
    arrays: dict[str, np.ndarray] = {}
    for k in image_keys(transitions[0].obs):
        try:
            arrays[f"obs.{k}"] = np.stack([np.asarray(f[k]) for f in frames])
        except ValueError as e:
            raise ValueError(f"obs[{k!r}] changes shape inside the episode: {e}") from None
        images = arrays[f"obs.{k}"]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"obs[{k!r}] has dtype {images.dtype} and shape {images.shape[1:]}; "
                "expected uint8 (H, W, 3)"
            )
    arrays["obs.state"] = _stack_vectors("obs.state", [f[STATE_KEY] for f in frames])
    arrays["action"] = _stack_vectors("action", [t.action for t in transitions])
    arrays["reward"] = np.array([t.reward for t in transitions], dtype=np.float32)
    arrays["gripper_penalty"] = np.array([t.gripper_penalty for t in transitions], dtype=np.float32)
    for key in ("obs.state", "action", "reward", "gripper_penalty"):
        if not np.all(np.isfinite(arrays[key])):
            raise ValueError(f"{key} has NaN or inf values; the episode is not saved")
    arrays["terminated"] = np.array([t.terminated for t in transitions], dtype=np.bool_)
    arrays["truncated"] = np.array([t.truncated for t in transitions], dtype=np.bool_)
    arrays["intervened"] = np.array([t.intervened for t in transitions], dtype=np.bool_)
    return arrays


def _stack_vectors(key: str, rows: list[np.ndarray]) -> np.ndarray:
    """(N, D) float32 from N numeric (D,) vectors; ValueError naming ``key`` otherwise."""
    try:
        values = np.stack([np.asarray(r) for r in rows])
    except ValueError as e:
        raise ValueError(f"{key} changes shape inside the episode: {e}") from None
    if values.dtype.kind not in "fiu" or values.ndim != 2:
        raise ValueError(
            f"{key} has dtype {values.dtype} and shape {values.shape[1:]}; expected float32 (D,)"
        )
    return values.astype(np.float32)


def check_meta(meta: dict) -> None:
    """ValueError unless ``meta`` names a task and leaves the keys save_episode sets alone."""
    if not isinstance(meta, dict):
        raise ValueError(f"meta is a {type(meta).__name__}; expected a dict")
    if not isinstance(meta.get("task"), str) or not meta["task"]:
        raise ValueError(f"meta['task']={meta.get('task')!r}; a non-empty task name is required")
    reserved = [k for k in RESERVED_META if k in meta]
    if reserved:
        raise ValueError(f"meta keys {reserved} are set by save_episode; remove them")


def save_episode(
    directory: str | Path, transitions: list[Transition], meta: dict, compress: bool = True
) -> Path:
    """Write one episode atomically as the next ``episode_NNNNNN.npz`` in ``directory``.

    compress: deflate the arrays (smaller files, about 30 MB/s of frames on one core); False
    stores them plainly (same format, np.load reads both) where write speed matters, as in the
    learner's store of streamed episodes.

    meta: JSON-serializable dict with at least ``task`` (str); ``format_version``,
    ``created_utc`` and ``num_steps`` are filled in here and may not be given.
    Creates ``directory`` if needed. Returns the final path. On any error the temporary file is
    removed and nothing else in the directory changes.
    """
    check_meta(meta)
    arrays = episode_arrays(transitions)
    full_meta = {
        **meta,
        "format_version": FORMAT_VERSION,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(),
        "num_steps": len(transitions),
    }
    try:
        meta_json = json.dumps(full_meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta is not JSON-serializable: {e}") from None
    arrays["meta"] = np.array(meta_json)

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    existing = _numbered(directory)
    number = existing[-1][0] + 1 if existing else 0
    final = episode_path(directory, number)
    return write_episode_file(final, arrays, compress, overwrite=False)


def write_episode_file(path: Path, arrays: dict[str, np.ndarray], compress: bool,
                       overwrite: bool) -> Path:  # fmt: skip
    """Write ``arrays`` as ``path`` atomically: a temporary file in the same folder, fsynced,
    made readable (0644), renamed over ``path``, and the rename fsynced. Without ``overwrite`` an
    existing ``path`` is a FileExistsError (one writer per directory). Returns ``path``."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; episodes are ordinary readable files
        if not overwrite and path.exists():  # a second writer got here first
            raise FileExistsError(f"{path} appeared while writing; one writer per directory")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems refuse fsync on a directory; the rename is done
        log.debug("fsync of directory %s failed: %s", directory, e)
    finally:
        os.close(fd)


def _entry(data: Any, path: Path, key: str) -> np.ndarray:
    if key not in data.files:
        raise EpisodeFormatError(f"{path}: missing key {key!r} (has {sorted(data.files)})")
    try:
        arr = data[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise EpisodeFormatError(f"{path}: key {key!r} is unreadable: {e}") from None
    arr.flags.writeable = False  # transitions share these arrays; keep them immutable
    return arr


def _check(arr: np.ndarray, path: Path, key: str, dtype: type, shape: tuple) -> None:
    """Shape entries of None match anything."""
    if arr.dtype != np.dtype(dtype):
        raise EpisodeFormatError(
            f"{path}: key {key!r} has dtype {arr.dtype}; expected {np.dtype(dtype)}"
        )
    if arr.ndim != len(shape) or any(
        s is not None and a != s for a, s in zip(arr.shape, shape, strict=True)
    ):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise EpisodeFormatError(f"{path}: key {key!r} has shape {arr.shape}; expected {want}")


def _numpy_reason(exc: BaseException) -> str:
    """numpy's reason a file did not load, without its advice to load pickled data unsafely
    (a hostile file's pickle runs code; an episode never holds one)."""
    text = str(exc)
    if "pickle" in text:
        return "not an archive of plain arrays (numpy reads it as pickled objects, never loaded)"
    return text


def _check_members(path: Path, max_bytes: int) -> None:
    """EpisodeFormatError unless every member is a .npy whose header agrees with the size the
    archive declares for it, and the total stays under ``max_bytes``; reads headers only."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        if zipfile.is_zipfile(path):
            raise EpisodeFormatError(f"{path}: not a readable .npz file: {e}") from None
        return  # not an archive at all: np.load says what it is
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise EpisodeFormatError(f"{path}: {len(members)} members; at most {MAX_MEMBERS}")
        total = 0
        for info in members:
            name = info.filename
            if not name.endswith(".npy") or "/" in name or name.startswith("."):
                raise EpisodeFormatError(f"{path}: member {name[:80]!r} is not a .npy array")
            try:
                with archive.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)  # fmt: skip
                    shape, _, dtype = read_header(fh, max_header_size=10_000)
                    header_bytes = fh.tell()
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
                reason = f"{path}: member {name!r} has no valid .npy header: {e}"
                raise EpisodeFormatError(reason) from None
            if dtype.hasobject:
                raise EpisodeFormatError(f"{path}: key {name[:-4]!r} holds Python objects")
            need = dtype.itemsize
            for dim in shape:
                need *= int(dim)
            if need > max_bytes:
                raise EpisodeFormatError(
                    f"{path}: key {name[:-4]!r} claims shape {shape} ({need} bytes); an episode "
                    f"file may hold at most {max_bytes} bytes"
                )
            if info.file_size != header_bytes + need:
                raise EpisodeFormatError(
                    f"{path}: key {name[:-4]!r} declares {info.file_size} bytes but its header "
                    f"{dtype} {shape} needs {header_bytes + need}"
                )
            total += need
            if total > max_bytes:
                raise EpisodeFormatError(
                    f"{path}: unpacks to more than {max_bytes} bytes; refused unread"
                )


def _meta_depth(value: Any, depth: int = 0) -> int:
    if depth > MAX_META_DEPTH:
        return depth
    if isinstance(value, dict):
        return max([_meta_depth(v, depth + 1) for v in value.values()], default=depth + 1)
    if isinstance(value, list):
        return max([_meta_depth(v, depth + 1) for v in value], default=depth + 1)
    return depth


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _parse_meta(path: Path, text: str) -> dict[str, Any]:
    """The meta JSON object, bounded in size and depth, with ints for the seq fields."""
    if len(text) > MAX_META_CHARS:
        raise EpisodeFormatError(f"{path}: key 'meta' is {len(text)} characters; at most "
                                 f"{MAX_META_CHARS}")  # fmt: skip
    # Depth first, by counting brackets, so json never recurses deeply.
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    if deepest > MAX_META_DEPTH:
        raise EpisodeFormatError(f"{path}: key 'meta' nests {deepest} deep; at most "
                                 f"{MAX_META_DEPTH}")  # fmt: skip
    try:
        meta = json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as e:
        raise EpisodeFormatError(f"{path}: key 'meta' is not JSON: {e}") from None
    if isinstance(meta, dict):
        for key in ("first_seq", "last_seq"):
            value = meta.get(key)
            if key in meta and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ
            ):
                raise EpisodeFormatError(
                    f"{path}: key 'meta' has {key}={str(value)[:40]}; expected an int in "
                    f"0..{MAX_SEQ}"
                )
    return meta


def load_episode(
    path: str | Path, max_bytes: int = MAX_EPISODE_BYTES
) -> tuple[list[Transition], dict[str, Any]]:
    """Read and validate one episode file; returns its steps and its meta dict.

    Raises EpisodeFormatError naming the file and the offending key for a member that is not a
    .npy, declared sizes over ``max_bytes`` or at odds with the headers, a missing key, a wrong
    dtype or shape, bad meta, non-finite floats, or a corrupt/truncated file; OSError if it
    cannot be opened.
    """
    path = Path(path)
    _check_members(path, max_bytes)
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile) as e:
        raise EpisodeFormatError(f"{path}: not a readable .npz file: {_numpy_reason(e)}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise EpisodeFormatError(f"{path}: holds a single array, not an episode .npz")
    with data:
        meta_arr = _entry(data, path, "meta")
        if meta_arr.dtype.kind != "U" or meta_arr.ndim != 0:
            raise EpisodeFormatError(
                f"{path}: key 'meta' has dtype {meta_arr.dtype} and shape {meta_arr.shape}; "
                "expected a 0-d str (JSON)"
            )
        meta = _parse_meta(path, str(meta_arr))
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            version = meta.get("format_version") if isinstance(meta, dict) else None
            raise EpisodeFormatError(
                f"{path}: key 'meta' has format_version={version!r}; "
                f"this reader supports {FORMAT_VERSION}"
            )
        steps = {k: _entry(data, path, k) for k in STEP_KEYS}
        _check(steps["reward"], path, "reward", np.float32, (None,))
        T = steps["reward"].shape[0]
        for k, (dtype, trailing) in STEP_KEYS.items():
            _check(steps[k], path, k, dtype, (T, None) if trailing is None else (T, *trailing))
        if T < 1 or meta.get("num_steps") != T:
            raise EpisodeFormatError(
                f"{path}: key 'meta' has num_steps={meta.get('num_steps')!r} but 'reward' has "
                f"{T} steps (need >= 1 and equal)"
            )
        cams = sorted(k[4:] for k in data.files if k.startswith("obs.") and k != "obs.state")
        frames = {STATE_KEY: _entry(data, path, "obs.state")}
        _check(frames[STATE_KEY], path, "obs.state", np.float32, (T + 1, None))
        for cam in cams:
            frames[cam] = _entry(data, path, f"obs.{cam}")
            _check(frames[cam], path, f"obs.{cam}", np.uint8, (T + 1, None, None, 3))
    for key, values in (("obs.state", frames[STATE_KEY]), ("action", steps["action"]),
                        ("reward", steps["reward"]),
                        ("gripper_penalty", steps["gripper_penalty"])):  # fmt: skip
        if not np.isfinite(values).all():
            raise EpisodeFormatError(f"{path}: key {key!r} holds NaN or inf values")
    ends = steps["terminated"][:-1] | steps["truncated"][:-1]
    if bool(ends.any()):
        raise EpisodeFormatError(
            f"{path}: keys 'terminated'/'truncated' end the episode at step "
            f"{int(np.argmax(ends))} of {T}; only the last step may"
        )
    obs = [{k: v[i] for k, v in frames.items()} for i in range(T + 1)]
    transitions = [
        Transition(
            obs=obs[i],
            action=steps["action"][i],
            reward=float(steps["reward"][i]),
            next_obs=obs[i + 1],
            terminated=bool(steps["terminated"][i]),
            truncated=bool(steps["truncated"][i]),
            intervened=bool(steps["intervened"][i]),
            gripper_penalty=float(steps["gripper_penalty"][i]),
        )
        for i in range(T)
    ]
    return transitions, meta


def load_episodes(
    directory: str | Path, strict: bool = False, max_bytes: int = MAX_EPISODE_BYTES
) -> Iterator[Episode]:
    """Yield the episodes of ``directory`` in number order, each read when reached.

    Leftover temporary files from an interrupted write are skipped with a logged warning. A file
    that is corrupt, truncated, hostile or breaks the format is quarantined (``quarantine``)
    and skipped; with ``strict=True`` it raises EpisodeFormatError instead and stays in place.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"episode directory {directory} does not exist")
    for p in sorted(directory.iterdir()):
        if _is_temp(p):
            log.warning("skipping %s: temporary file left by an interrupted write", p)
    for _, path in _numbered(directory):
        try:
            transitions, meta = load_episode(path, max_bytes)
        except EpisodeFormatError as e:
            if strict:
                raise
            quarantine(path, str(e))
            continue
        except (MemoryError, RecursionError, ValueError, TypeError, KeyError, IndexError) as e:
            # Anything a hostile file provokes past the checks: named, and never fatal.
            reason = f"{path}: unreadable ({type(e).__name__}: {str(e)[:200]})"
            if strict:
                raise EpisodeFormatError(reason) from None
            quarantine(path, reason)
            continue
        except OSError as e:
            log.error("skipping episode file %s: cannot read it: %s", path, e)
            continue
        yield Episode(path, transitions, meta)


def quarantine(path: Path, reason: str) -> Path | None:
    """Move a bad episode file into ``quarantine/`` beside it, with ``<name>.reason.txt``
    holding ``reason``; logs the reason. Returns the new path (None if it could not move)."""
    target_dir = path.parent / QUARANTINE_DIR
    target = target_dir / path.name
    try:
        target_dir.mkdir(exist_ok=True)
        n = 1
        while target.exists():  # a later file of the same number went bad too
            target = target_dir / f"{path.stem}.{n}{path.suffix}"
            n += 1
        os.replace(path, target)
        target.with_name(target.name + ".reason.txt").write_text(reason + "\n")
    except OSError as e:
        log.error("skipping episode file %s: %s (could not quarantine it: %s)", path, reason, e)
        return None
    log.error("quarantined episode file %s as %s: %s", path, target, reason)
    return target
