"""``robot-rl cameras list | publish | publish-twin | mirror-twin | crop``: camera stream sources
(the sources and the publishing loop live in ``robot_rl.transport.camera_sources``), and choosing
a camera's crop box (``robot_rl.cli.camera_crop``)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from robot_rl.cli import camera_crop
from robot_rl.cli.errors import CliError
from robot_rl.cli.flags import add_key_flags, add_robot_flags, check_task
from robot_rl.endpoints import DEFAULT_ENDPOINTS

log = logging.getLogger("robot_rl.cli")


def add(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cameras", help="list RealSense cameras; stream cameras; choose crops"
    )
    actions = parser.add_subparsers(dest="cameras_command", metavar="ACTION", required=True)
    actions.add_parser("list", help="serial, model and firmware of each camera").set_defaults(
        handler=run_list
    )
    twin = actions.add_parser(
        "publish-twin", help="stream the twin's front and wrist cameras while its expert works"
    )
    twin.add_argument("--task", default="pick_cube")
    _add_stream_flags(twin, DEFAULT_ENDPOINTS.cameras)
    twin.add_argument("--size", type=int, default=128, help="square image side (default 128)")
    twin.add_argument("--jpeg", type=int, help="JPEG quality 1-100 (default raw frames)")
    twin.add_argument(
        "--fps",
        type=float,
        default=0.0,
        help="rounds per second at most (default 0: as fast as the twin renders)",
    )
    twin.set_defaults(handler=run_publish_twin)

    mirror = actions.add_parser(
        "mirror-twin", help="stream the cameras of a twin that runs behind a robot server"
    )
    add_robot_flags(mirror)
    _add_stream_flags(mirror, DEFAULT_ENDPOINTS.cameras)
    mirror.add_argument("--size", type=int, default=128, help="square image side (default 128)")
    mirror.add_argument("--fps", type=float, default=10.0)
    mirror.add_argument("--camera", action="append", metavar="NAME",
                        help="render this camera: front, wrist, side or top (repeatable; default "
                        "front and wrist, one stamp per round, synchronized as a pixel policy "
                        "needs). One process per camera models a rig's separate devices: no "
                        "camera waits for another's render, but their frames are not "
                        "synchronized")  # fmt: skip
    mirror.set_defaults(handler=run_mirror_twin)

    real = actions.add_parser("publish", help="stream RealSense cameras (one process per host)")
    real.add_argument("--camera", action="append", required=True, metavar="ID=SERIAL",
                      help="camera id and serial number, e.g. front=123456 (repeatable; "
                      "SERIAL may be empty when one camera is connected)")  # fmt: skip
    real.add_argument("--crop", action="append", default=[], metavar="ID=X,Y,W,H",
                      help="crop camera ID to the box at pixel (X, Y) of size W x H before "
                      "--resize, e.g. front=80,0,480,480 (repeatable)")  # fmt: skip
    real.add_argument("--crops-from", metavar="SESSION.yaml",
                      help="crop the cameras as this session config's camera_crops says "
                      "(robot-rl cameras crop writes them)")  # fmt: skip
    _add_stream_flags(real, DEFAULT_ENDPOINTS.cameras_host)
    real.add_argument("--width", type=int, default=640)
    real.add_argument("--height", type=int, default=480)
    real.add_argument("--fps", type=int, default=30)
    real.add_argument("--resize", type=int, help="square output side (e.g. 128)")
    real.add_argument("--jpeg", type=int, help="JPEG quality 1-100 (default raw frames)")
    real.set_defaults(handler=run_publish)
    camera_crop.add(actions)


def _add_stream_flags(parser: argparse.ArgumentParser, endpoint: str) -> None:
    parser.add_argument("--endpoint", default=endpoint, help=f"PUB endpoint (default {endpoint})")
    add_key_flags(parser, "cameras")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")


def _publisher(args: argparse.Namespace, jpeg: int | None = None) -> Any:
    from robot_rl.transport.camera_stream import CameraPublisher
    from robot_rl.transport.security import SecurityConfig, SecurityError

    security = SecurityConfig(keys_dir=args.keys, name=args.key, plaintext=args.plaintext)
    try:
        return CameraPublisher(args.endpoint, security, jpeg_quality=jpeg)
    except (SecurityError, ValueError) as exc:
        raise CliError(str(exc)) from None


def _serve(args: argparse.Namespace, source: Any, publisher: Any, what: str,
           period_s: float = 0.0) -> int:  # fmt: skip
    """Publish ``source`` until --duration or Ctrl-C; close both; report the frame count."""
    from robot_rl.transport.camera_sources import publish_frames

    print(f"cameras: {source.camera_ids}{what} on {publisher.endpoint}; Ctrl-C stops",
          flush=True)  # fmt: skip
    try:
        frames = publish_frames(publisher, source, args.duration, period_s)
    finally:
        source.close()
        publisher.close()
    print(f"cameras: published {frames} frames")
    return 0


def run_publish_twin(args: argparse.Namespace) -> int:
    """The twin's cameras as a stream source (for viewers and the console) with no robot."""
    from robot_rl.transport.camera_sources import TwinExpertFrames

    check_task(args.task)
    if not args.fps >= 0:
        raise CliError(f"--fps {args.fps}; expected >= 0 (0: as fast as the twin renders)")
    publisher = _publisher(args, args.jpeg)
    return _serve(args, TwinExpertFrames(args.task, args.size), publisher,
                  f" of the {args.task} twin", 1.0 / args.fps if args.fps else 0.0)  # fmt: skip


def run_mirror_twin(args: argparse.Namespace) -> int:
    """The cameras of the twin behind a robot server, rendered by a mirror of its state."""
    from robot_rl.transport.camera_sources import MirrorFrames
    from robot_rl.transport.robot_server import RobotClient, RobotEndpoints
    from robot_rl.transport.security import SecurityConfig, SecurityError

    check_task(args.task)
    if not args.fps > 0:
        raise CliError(f"--fps {args.fps}; expected > 0 frames per second")
    security = SecurityConfig(keys_dir=args.keys, name=args.key, server_name="robot",
                              plaintext=args.plaintext)  # fmt: skip
    try:
        client = RobotClient(RobotEndpoints(args.commands, args.state), security)
    except (SecurityError, ValueError) as exc:
        raise CliError(str(exc)) from None
    try:
        source = MirrorFrames(client, args.task, args.size, cameras=args.camera)
        try:
            publisher = _publisher(args)
        except CliError:
            source.close()
            raise
        return _serve(args, source, publisher, f" mirroring the {args.task} twin at {args.state}",
                      1.0 / args.fps)  # fmt: skip
    except ValueError as exc:
        raise CliError(str(exc)) from None
    finally:
        client.close()


def parse_crops(items: list[str], camera_ids: list[str]) -> dict[str, tuple[int, int, int, int]]:
    """``--crop ID=X,Y,W,H`` items as {camera id: (x, y, w, h)} pixels."""
    crops = {}
    for item in items:
        camera_id, _, box = item.partition("=")
        try:
            values = tuple(int(v) for v in box.split(","))
        except ValueError:
            values = ()
        if camera_id not in camera_ids or len(values) != 4:
            raise CliError(f"--crop {item!r}; expected ID=X,Y,W,H with ID one of {camera_ids} "
                           "and four whole pixel numbers (e.g. front=80,0,480,480)")  # fmt: skip
        crops[camera_id] = values
    return crops


def run_publish(args: argparse.Namespace) -> int:
    """RealSense cameras as a stream source: each camera's newest frame, published as it comes."""
    from robot_rl.hardware.realsense import CameraUnavailableError, RealSenseCamera, RealSenseConfig
    from robot_rl.transport.camera_sources import CameraFrames

    pairs = [item.partition("=")[::2] for item in args.camera]
    for item, (camera_id, _) in zip(args.camera, pairs, strict=True):
        if not camera_id:
            raise CliError(f"--camera {item!r}; expected ID=SERIAL (e.g. front=123456)")
    crops = parse_crops(args.crop, [camera_id for camera_id, _ in pairs])
    if args.crops_from:
        for camera_id, box in camera_crop.session_crops(args.crops_from).items():
            if camera_id in crops:
                raise CliError(f"camera {camera_id!r} has a --crop and a crop in "
                               f"{args.crops_from}; keep one")  # fmt: skip
            if any(camera_id == c for c, _ in pairs):
                crops[camera_id] = box
    resize = (args.resize, args.resize) if args.resize else None
    try:
        configs = [RealSenseConfig(camera_id, serial, args.width, args.height, args.fps,
                                   crop=crops.get(camera_id), resize=resize)
                   for camera_id, serial in pairs]  # fmt: skip
    except ValueError as exc:
        raise CliError(str(exc)) from None
    cameras: list[Any] = []
    try:
        cameras = [RealSenseCamera(config) for config in configs]
        publisher = _publisher(args, args.jpeg)
    except (CameraUnavailableError, CliError) as exc:
        for camera in cameras:
            camera.close()
        raise CliError(str(exc)) from None
    try:
        return _serve(args, CameraFrames(cameras), publisher, "")
    except CameraUnavailableError as exc:
        log.error("cameras: %s", exc)
        return 1


def run_list(args: argparse.Namespace) -> int:
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
