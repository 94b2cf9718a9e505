"""``robot-rl cameras crop``: choose a camera's crop box and write it into a session config.

One frame is grabbed from the camera (a RealSense by serial, an OpenCV device index, a camera
stream endpoint, or a PNG saved earlier) and saved as ``<out>/<ID>_frame.png``, with a pixel grid
and ruler drawn over it in ``<ID>_grid.png`` so a box can be read off it on a machine without a
display (a person over SSH copies the PNG and reads the numbers). The box comes from ``--box
X,Y,W,H`` (the format of ``cameras publish --crop ID=X,Y,W,H``) or, where a display and a GUI
build of OpenCV are available, from ``--interactive`` (OpenCV's selectROI). It is checked against
the frame, optionally trimmed to the output's aspect ratio (``--fit-aspect``), previewed cropped and
resized exactly as the publisher will (``<ID>_crop.png``, and the box drawn on the grid in
``<ID>_box.png``), and written into the session config's ``camera_crops`` (``--config``), which
``robot-rl session start`` turns into the publisher's ``--crop``. The file keeps its comments and
other keys (a line-level edit, checked by parsing the result) and is replaced atomically.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.cli.errors import CliError

Box = tuple[int, int, int, int]  # x, y, width, height in captured pixels
CROPS_KEY = "camera_crops"
SETTLE_FRAMES = 15  # a RealSense frame this many frames after the start (0.5 s at 30 fps)


def add(actions: argparse._SubParsersAction) -> None:
    """The ``crop`` action of ``robot-rl cameras``."""
    crop = actions.add_parser(
        "crop",
        help="save a frame with a pixel grid, choose the crop box, write it into a session config",
        description="Grab one frame, save it (ID_frame.png) with a pixel grid (ID_grid.png), "
        "take the crop box from --box or --interactive, save a preview of the cropped, resized "
        "image (ID_crop.png) and write the box into --config's camera_crops. Without a box it "
        "only saves the frames: read the box off ID_grid.png, then run again with --box (add "
        "--image OUT/ID_frame.png to reuse that frame).",
    )
    crop.add_argument("--camera", required=True, metavar="ID", help="camera id, e.g. front")
    source = crop.add_mutually_exclusive_group()
    source.add_argument("--serial", default="",
                        help="RealSense serial (default: the one connected RealSense)")  # fmt: skip
    source.add_argument("--device", type=int, metavar="INDEX", help="OpenCV camera index (V4L2)")
    source.add_argument(
        "--endpoint",
        metavar="URL",
        help="a camera stream (robot-rl cameras publish, without --crop/--resize)",
    )
    source.add_argument("--image", metavar="PNG", help="a frame saved earlier (ID_frame.png)")
    crop.add_argument("--width", type=int, default=640, help="capture width (default 640)")
    crop.add_argument("--height", type=int, default=480, help="capture height (default 480)")
    crop.add_argument("--keys", default="keys", help="keys folder (--endpoint)")
    crop.add_argument("--key", default="actor-0", help="this client's key name (--endpoint)")
    crop.add_argument("--plaintext", action="store_true", help="no CURVE (loopback only)")
    crop.add_argument("--box", metavar="X,Y,W,H", help="the crop box in captured pixels")
    crop.add_argument(
        "--interactive",
        action="store_true",
        help="drag the box with the mouse (needs a display and a GUI OpenCV)",
    )
    crop.add_argument(
        "--resize",
        type=int,
        default=128,
        help="square output side the publisher resizes to (default 128)",
    )
    crop.add_argument(
        "--fit-aspect",
        action="store_true",
        help="trim the box about its centre to the output's aspect ratio (square)",
    )
    crop.add_argument(
        "--config",
        metavar="SESSION.yaml",
        help="write the box into this session config's camera_crops",
    )
    crop.add_argument("--out", default="crop", help="folder for the PNGs (default ./crop)")
    crop.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for a frame")
    crop.set_defaults(handler=run_crop)


# -- the box -------------------------------------------------------------------------------------
def parse_box(text: str) -> Box:
    """``X,Y,W,H`` as four whole pixel numbers (CliError otherwise)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise CliError(f"--box {text!r}; expected X,Y,W,H: four whole pixel numbers "
                       "(e.g. 80,0,480,480)")  # fmt: skip
    return values  # type: ignore[return-value]


def check_box(box: Box, frame_w: int, frame_h: int, camera_id: str) -> None:
    """CliError (one line) unless ``box`` lies inside a ``frame_w`` x ``frame_h`` frame."""
    x, y, w, h = box
    if w < 1 or h < 1:
        raise CliError(f"crop box {_fmt(box)} of camera {camera_id!r} has no area; width and "
                       "height must be >= 1 pixel")  # fmt: skip
    if x < 0 or y < 0 or x + w > frame_w or y + h > frame_h:
        raise CliError(
            f"crop box {_fmt(box)} of camera {camera_id!r} does not fit its {frame_w}x{frame_h} "
            f"frame (it spans x {x}..{x + w}, y {y}..{y + h}); allowed: x >= 0, y >= 0, "
            f"x+w <= {frame_w}, y+h <= {frame_h}"
        )


def fit_aspect(box: Box, out_w: int, out_h: int) -> Box:
    """``box`` trimmed about its centre to the ``out_w``:``out_h`` aspect ratio (it only
    shrinks, so a box inside the frame stays inside)."""
    x, y, w, h = box
    if w * out_h > h * out_w:  # too wide
        new_w = max(1, round(h * out_w / out_h))
        return (x + (w - new_w) // 2, y, new_w, h)
    new_h = max(1, round(w * out_h / out_w))
    return (x, y + (h - new_h) // 2, w, new_h)


def _fmt(box: Box) -> str:
    return ",".join(str(v) for v in box)


# -- images --------------------------------------------------------------------------------------
def _cv2() -> Any:
    from robot_rl.extras import MissingExtraError, require

    try:
        return require("cv2", "cameras", "robot-rl cameras crop")
    except MissingExtraError as exc:
        raise CliError(str(exc)) from None


def crop_and_resize(frame: np.ndarray, box: Box, side_px: int) -> np.ndarray:
    """What the publisher sends: ``frame`` (H, W, 3) cut to ``box``, resized to ``side_px``
    square with area interpolation (``hardware.realsense``'s order and method)."""
    x, y, w, h = box
    image = frame[y : y + h, x : x + w]
    if image.shape[1::-1] != (side_px, side_px):
        image = _cv2().resize(image, (side_px, side_px), interpolation=_cv2().INTER_AREA)
    return np.ascontiguousarray(image, dtype=np.uint8)


def grid_image(frame: np.ndarray, minor_px: int = 20, major_px: int = 100) -> np.ndarray:
    """``frame`` (H, W, 3 RGB) with a pixel grid: a faint line every ``minor_px``, a yellow one
    every ``major_px`` labelled with its pixel coordinate along the top and left edges."""
    cv2 = _cv2()
    image = frame.astype(np.float32)
    height, width = frame.shape[:2]
    minor = np.zeros((height, width), bool)
    minor[:, ::minor_px] = True
    minor[::minor_px, :] = True
    image[minor] = 0.6 * image[minor] + 0.4 * 255.0
    image = image.astype(np.uint8)
    yellow, black = (255, 220, 0), (0, 0, 0)
    for x in range(0, width, major_px):
        cv2.line(image, (x, 0), (x, height - 1), yellow, 1)
    for y in range(0, height, major_px):
        cv2.line(image, (0, y), (width - 1, y), yellow, 1)
    labels = [((x + 2, 12), str(x)) for x in range(major_px, width, major_px)]
    labels += [((2, y - 3), str(y)) for y in range(major_px, height, major_px)]
    labels.append(((2, 12), "0"))
    for origin, text in labels:
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.4, black, 3, cv2.LINE_AA)
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.4, yellow, 1, cv2.LINE_AA)
    cv2.putText(image, f"{width}x{height}", (width - 80, height - 6), cv2.FONT_HERSHEY_SIMPLEX,
                0.4, yellow, 1, cv2.LINE_AA)  # fmt: skip
    return image


def save_png(path: Path, image: np.ndarray) -> None:
    """Write an RGB image as PNG (CliError naming the path if it cannot be written)."""
    cv2 = _cv2()
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise CliError(f"could not write {path}; check that the folder is writable")


# -- sources -------------------------------------------------------------------------------------
def grab_frame(args: argparse.Namespace) -> np.ndarray:
    """One (H, W, 3) uint8 RGB frame from the source the flags name; CliError (one line) when the
    camera is missing or sends nothing."""
    if args.image:
        return _read_png(Path(args.image))
    if args.device is not None:
        return _grab_opencv(args.device, args.width, args.height, args.timeout)
    if args.endpoint:
        return _grab_stream(args)
    return _grab_realsense(args)


def _read_png(path: Path) -> np.ndarray:
    cv2 = _cv2()
    image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    if image is None:
        raise CliError(f"--image {path} is not a readable image file")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _grab_opencv(index: int, width: int, height: int, timeout_s: float) -> np.ndarray:
    cv2 = _cv2()
    capture = cv2.VideoCapture(index)
    try:
        if not capture.isOpened():
            raise CliError(f"no camera at OpenCV index {index}; list them with "
                           "`v4l2-ctl --list-devices` (or `ls /dev/video*`)")  # fmt: skip
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ok, image = capture.read()
            if ok and image is not None:
                return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        raise CliError(f"OpenCV camera {index} sent no frame within {timeout_s} s")
    finally:
        capture.release()


def _grab_realsense(args: argparse.Namespace) -> np.ndarray:
    from robot_rl.hardware.realsense import CameraUnavailableError, RealSenseCamera, RealSenseConfig

    try:
        config = RealSenseConfig(args.camera, args.serial, args.width, args.height,
                                 frame_timeout_s=args.timeout)  # fmt: skip
        camera = RealSenseCamera(config)
    except (CameraUnavailableError, ValueError) as exc:
        raise CliError(str(exc)) from None
    try:
        frame = camera.read()
        for _ in range(SETTLE_FRAMES):  # auto exposure settles over the first frames
            frame = camera.read(newer_than_seq=frame.seq)
        return frame.image
    except CameraUnavailableError as exc:
        raise CliError(str(exc)) from None
    finally:
        camera.close()


def _grab_stream(args: argparse.Namespace) -> np.ndarray:
    from robot_rl.transport.camera_stream import CameraSubscriber
    from robot_rl.transport.security import SecurityConfig, SecurityError

    security = SecurityConfig(keys_dir=args.keys, name=args.key, server_name="cameras",
                              plaintext=args.plaintext)  # fmt: skip
    try:
        subscriber = CameraSubscriber([args.endpoint], security, [args.camera])
    except (SecurityError, ValueError) as exc:
        raise CliError(str(exc)) from None
    try:
        frames = subscriber.wait_synchronized(timeout_s=args.timeout)
    except TimeoutError:
        raise CliError(f"no frame of camera {args.camera!r} from {args.endpoint} within "
                       f"{args.timeout} s; is `robot-rl cameras publish` running there "
                       "with that camera id?") from None  # fmt: skip
    finally:
        subscriber.close()
    return np.asarray(frames[args.camera].frame.image, dtype=np.uint8)


def select_interactive(frame: np.ndarray, camera_id: str, grid_path: Path) -> Box:
    """The box dragged with the mouse in an OpenCV window (CliError without a display)."""
    hint = f"read the box off {grid_path} and pass --box X,Y,W,H"
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        raise CliError(f"--interactive needs a display and none is set (DISPLAY); over SSH use "
                       f"ssh -X, or {hint}")  # fmt: skip
    cv2 = _cv2()
    title = f"crop {camera_id}: drag a box, Enter accepts, c cancels"
    try:
        x, y, w, h = cv2.selectROI(title, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), True, False)
        cv2.destroyWindow(title)
    except cv2.error as exc:
        raise CliError(f"this OpenCV cannot open a window ({str(exc).strip().splitlines()[-1]}); "
                       f"the headless build has no GUI: pip install opencv-python, or "
                       f"{hint}") from None  # fmt: skip
    if w < 1 or h < 1:
        raise CliError(f"no box selected; nothing written ({hint})")
    return (int(x), int(y), int(w), int(h))


# -- the config ----------------------------------------------------------------------------------
_TOP_KEY = re.compile(r"^(?P<key>[A-Za-z_][\w-]*)\s*:(?P<rest>.*)$")


def _stale_crop(camera_id: str) -> re.Pattern[str]:
    """A ``--crop ID=X,Y,W,H`` flag inside a camera_processes line."""
    return re.compile(rf"\s--crop[ =]{re.escape(camera_id)}=\d+,\d+,\d+,\d+")


def edit_crops(text: str, camera_id: str, box: Box) -> tuple[str, list[str]]:
    """``text`` (a session config's YAML) with ``camera_crops.<camera_id>`` set to ``box``, and
    notes on what else changed. A line-level edit: comments, order and other keys are kept; a
    publisher line's own ``--crop <camera_id>=...`` is dropped (the file's box replaces it)."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    value = f"[{', '.join(str(v) for v in box)}]"
    notes: list[str] = []
    start = next((i for i, line in enumerate(lines)
                  if (m := _TOP_KEY.match(line)) and m["key"] == CROPS_KEY), None)  # fmt: skip
    if start is None:
        lines += ["# Crop boxes, X, Y, W, H in captured pixels before the resize "
                  "(robot-rl cameras crop)\n", f"{CROPS_KEY}:\n",
                  f"  {camera_id}: {value}\n"]  # fmt: skip
    else:
        rest = _TOP_KEY.match(lines[start])["rest"]  # type: ignore[index]
        inline = rest.split("#", 1)[0].strip()
        if inline and inline != "{}":
            raise CliError(f"{CROPS_KEY}: is written inline ({inline}); write it as a block "
                           f"(one '  ID: [X, Y, W, H]' line per camera) and run again")  # fmt: skip
        if inline == "{}":
            comment = rest.partition("#")[2].rstrip("\n")
            lines[start] = f"{CROPS_KEY}:" + (f"  #{comment}" if comment else "") + "\n"
        end = start + 1
        while end < len(lines) and (lines[end][:1] in (" ", "\t") or not lines[end].strip()):
            end += 1
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1  # blank lines after the block stay after it
        entry = re.compile(rf"^(?P<indent>\s+){re.escape(camera_id)}\s*:(?P<value>[^#\n]*)"
                           r"(?P<comment>#.*)?$")  # fmt: skip
        for i in range(start + 1, end):
            m = entry.match(lines[i].rstrip("\n"))
            if m:
                comment = f"  {m['comment']}" if m["comment"] else ""
                lines[i] = f"{m['indent']}{camera_id}: {value}{comment}\n"
                break
        else:
            indents = [re.match(r"^\s+", lines[i])[0] for i in range(start + 1, end)
                       if lines[i].strip() and not lines[i].lstrip().startswith("#")]  # fmt: skip
            lines.insert(end, f"{indents[0] if indents else '  '}{camera_id}: {value}\n")
    stale = _stale_crop(camera_id)
    for i, line in enumerate(lines):
        if line.lstrip().startswith("- ") and stale.search(line):
            flag = stale.search(line)[0].strip()  # type: ignore[index]
            lines[i] = stale.sub("", line)
            notes.append(f"dropped {flag} from a camera_processes line ({CROPS_KEY} holds it)")
    return "".join(lines), notes


def write_crop(path: Path, camera_id: str, box: Box) -> list[str]:
    """Set ``camera_crops.<camera_id>`` in the session config at ``path``; the new text must
    still parse as a session config holding that box, else nothing is written. The file is
    replaced atomically (temp file, rename): an error never leaves it half written."""
    import yaml

    from robot_rl.config import ConfigError, from_dict
    from robot_rl.runtime.session import SessionConfig

    if not path.is_file():
        raise CliError(f"--config {path} does not exist; name the session config that "
                       "declares the cameras (camera_processes)")  # fmt: skip
    text, notes = edit_crops(path.read_text(encoding="utf-8"), camera_id, box)
    try:
        data = yaml.safe_load(text)
        if data.get(CROPS_KEY, {}).get(camera_id) != list(box):
            raise ValueError(f"{CROPS_KEY}.{camera_id} did not read back as {list(box)}")
        from_dict(SessionConfig, data)
    except (yaml.YAMLError, ConfigError, ValueError, AttributeError, TypeError) as exc:
        reason = str(exc).splitlines()[0]
        raise CliError(f"--config {path}: not changed, it would not load as a session config "
                       f"(robot-rl session start): {reason}") from None  # fmt: skip
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return notes


def session_crops(path: str | Path) -> dict[str, Box]:
    """The ``camera_crops`` of the session config at ``path`` (CliError if it does not load)."""
    from robot_rl.config import ConfigError, load_config
    from robot_rl.runtime.session import SessionConfig

    try:
        return dict(load_config(SessionConfig, path).camera_crops)
    except (ConfigError, ValueError) as exc:
        raise CliError(f"--crops-from {path}: {str(exc).splitlines()[0]}") from None


# -- the command ---------------------------------------------------------------------------------
def run_crop(args: argparse.Namespace) -> int:
    if args.box and args.interactive:
        raise CliError("--box and --interactive both choose the box; give one")
    if args.resize < 1:
        raise CliError(f"--resize {args.resize}; expected a side of >= 1 pixel")
    camera_id = args.camera
    if not re.fullmatch(r"[A-Za-z0-9_-]+", camera_id):
        raise CliError(f"--camera {camera_id!r}; expected an id of letters, digits, _ or -")
    box = parse_box(args.box) if args.box else None
    frame = grab_frame(args)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise CliError(f"camera {camera_id!r} gave a {frame.shape} image; expected H x W x 3")
    height, width = frame.shape[:2]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame_path, grid_path = out / f"{camera_id}_frame.png", out / f"{camera_id}_grid.png"
    if not (args.image and Path(args.image).resolve() == frame_path.resolve()):
        save_png(frame_path, frame)
    grid = grid_image(frame)
    save_png(grid_path, grid)
    print(f"cameras crop: {camera_id} frame {width}x{height} saved: {frame_path}, with a pixel "
          f"grid (lines every 20 px, labels every 100 px): {grid_path}")  # fmt: skip
    if box is None and not args.interactive:
        print(f"cameras crop: no box given; read one off {grid_path}, then run again with "
              f"--box X,Y,W,H --image {frame_path}" + (f" --config {args.config}"
                                                        if args.config else ""))  # fmt: skip
        return 0
    if box is None:
        box = select_interactive(frame, camera_id, grid_path)
    check_box(box, width, height, camera_id)
    if args.fit_aspect:
        fitted = fit_aspect(box, args.resize, args.resize)
        if fitted != box:
            print(f"cameras crop: box {_fmt(box)} trimmed to {_fmt(fitted)} (about its centre) "
                  f"for the square {args.resize}x{args.resize} output")  # fmt: skip
        box = fitted
    elif abs(box[2] / box[3] - 1.0) > 0.01:
        print(f"cameras crop: note: the {box[2]}x{box[3]} box is resized to a square "
              f"{args.resize}x{args.resize}, which stretches it by {box[2] / box[3]:.2f}:1; "
              "--fit-aspect trims it to square")  # fmt: skip
    preview_path, box_path = out / f"{camera_id}_crop.png", out / f"{camera_id}_box.png"
    save_png(preview_path, crop_and_resize(frame, box, args.resize))
    boxed = grid.copy()
    x, y, w, h = box
    _cv2().rectangle(boxed, (x, y), (x + w - 1, y + h - 1), (255, 0, 0), 2)
    save_png(box_path, boxed)
    flag = f"--crop {camera_id}={_fmt(box)}"
    print(f"cameras crop: preview {preview_path} (the box on the grid: {box_path}); "
          f"publisher flag: {flag}")  # fmt: skip
    if args.config:
        path = Path(args.config)
        for note in write_crop(path, camera_id, box):
            print(f"cameras crop: {note}")
        print(f"cameras crop: wrote {CROPS_KEY}.{camera_id}: [{', '.join(map(str, box))}] into "
              f"{path}; robot-rl session start passes it as {shlex.quote(flag)}")  # fmt: skip
    return 0
