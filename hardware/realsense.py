"""Intel RealSense color cameras (pyrealsense2) as ``robot_rl.interfaces.Camera`` sources.

One ``RealSenseCamera`` per device, chosen by serial number: color stream at a set resolution and
frame rate, optional manual exposure, a capture thread that keeps only the newest frame (a slow
consumer never reads a stale queue), then an optional crop and resize per camera. Frames carry
the host's monotonic capture time and the device's frame number, like the twin's cameras, so the
camera publishers treat both alike.

All device access goes through a small ``backend`` (the ``pyrealsense2`` module by default), so
the driver is tested against a fake device layer. ``list_devices()`` backs
``robot-rl cameras list``.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from robot_rl.interfaces import Frame

log = logging.getLogger(__name__)


class CameraUnavailableError(RuntimeError):
    """No such camera, no driver, or the camera stopped delivering frames."""


def load_backend() -> ModuleType:
    """The pyrealsense2 module; CameraUnavailableError saying how to install it if missing."""
    try:
        return importlib.import_module("pyrealsense2")
    except ImportError:
        raise CameraUnavailableError(
            "pyrealsense2 is not installed; install the hardware extra: "
            'pip install -e ".[hardware]"'
        ) from None


@dataclass(frozen=True)
class RealSenseConfig:
    """One camera. crop: (x, y, width, height) in captured pixels, applied before resize:
    (width, height) of the delivered image. exposure_us: None keeps auto exposure."""

    camera_id: str = "front"
    serial: str = ""  # "" takes the only connected camera (an error if there are several)
    width: int = 640
    height: int = 480
    fps: int = 30
    exposure_us: float | None = None
    crop: tuple[int, int, int, int] | None = None
    resize: tuple[int, int] | None = None
    frame_timeout_s: float = 1.0

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1 or self.fps < 1:
            raise ValueError(f"{self.camera_id}: width, height and fps must be >= 1")
        if self.exposure_us is not None and not self.exposure_us > 0:
            raise ValueError(f"{self.camera_id}: exposure_us={self.exposure_us}; must be > 0")
        if self.crop is not None:
            x, y, w, h = self.crop
            if x < 0 or y < 0 or w < 1 or h < 1 or x + w > self.width or y + h > self.height:
                raise ValueError(
                    f"{self.camera_id}: crop {self.crop} does not fit a {self.width}x{self.height}"
                    " image"
                )
        if self.resize is not None and (self.resize[0] < 1 or self.resize[1] < 1):
            raise ValueError(f"{self.camera_id}: resize {self.resize}; sides must be >= 1")


def list_devices(backend: Any | None = None) -> list[dict[str, str]]:
    """Connected RealSense devices as ``{"serial", "name", "firmware"}`` dicts (maybe empty)."""
    rs = backend or load_backend()
    devices = []
    for device in rs.context().query_devices():
        devices.append(
            {
                "serial": device.get_info(rs.camera_info.serial_number),
                "name": device.get_info(rs.camera_info.name),
                "firmware": device.get_info(rs.camera_info.firmware_version),
            }
        )
    return devices


class RealSenseCamera:
    """A running color stream of one RealSense; ``read()`` returns the newest processed frame."""

    def __init__(self, config: RealSenseConfig, backend: Any | None = None) -> None:
        self.config = config
        self._rs = rs = backend or load_backend()
        serial = self._choose_serial()
        rs_config = rs.config()
        rs_config.enable_device(serial)
        rs_config.enable_stream(
            rs.stream.color, config.width, config.height, rs.format.rgb8, config.fps
        )
        self._pipeline = rs.pipeline()
        try:
            profile = self._pipeline.start(rs_config)
        except RuntimeError as exc:
            raise CameraUnavailableError(
                f"{config.camera_id}: RealSense {serial} cannot stream {config.width}x"
                f"{config.height} at {config.fps} fps: {exc}; check the mode and the USB 3 link"
            ) from None
        self.serial = serial
        if config.exposure_us is not None:
            sensor = profile.get_device().first_color_sensor()
            sensor.set_option(rs.option.enable_auto_exposure, 0)
            sensor.set_option(rs.option.exposure, float(config.exposure_us))
        self._lock = threading.Condition()
        self._latest: Frame | None = None
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self.frames_captured = 0
        self._thread = threading.Thread(
            target=self._capture, name=f"realsense-{config.camera_id}", daemon=True
        )
        self._thread.start()

    @property
    def camera_id(self) -> str:
        return self.config.camera_id

    def _choose_serial(self) -> str:
        devices = list_devices(self._rs)
        serials = [d["serial"] for d in devices]
        if not serials:
            raise CameraUnavailableError(
                f"{self.config.camera_id}: no RealSense camera connected; plug one in (USB 3) "
                "and check `robot-rl cameras list`"
            )
        if self.config.serial:
            if self.config.serial not in serials:
                raise CameraUnavailableError(
                    f"{self.config.camera_id}: RealSense {self.config.serial} not connected; "
                    f"connected: {serials}"
                )
            return self.config.serial
        if len(serials) > 1:
            raise CameraUnavailableError(
                f"{self.config.camera_id}: {len(serials)} RealSense cameras connected {serials}; "
                "set serial to choose one"
            )
        return serials[0]

    def _capture(self) -> None:
        timeout_ms = int(self.config.frame_timeout_s * 1000)
        while not self._stop.is_set():
            try:
                frames = self._pipeline.wait_for_frames(timeout_ms)
                color = frames.get_color_frame()
                if not color:
                    continue
                stamp = time.monotonic()
                image = self._process(np.asanyarray(color.get_data()))
                frame = Frame(image, stamp, int(color.get_frame_number()), self.camera_id)
            except Exception as exc:  # a USB drop surfaces as RuntimeError from librealsense
                if self._stop.is_set():
                    return
                log.error("%s: capture stopped: %s", self.camera_id, exc)
                with self._lock:
                    self._error = exc
                    self._lock.notify_all()
                return
            with self._lock:
                self._latest = frame
                self.frames_captured += 1
                self._lock.notify_all()

    def _process(self, image: np.ndarray) -> np.ndarray:
        cfg = self.config
        if cfg.crop is not None:
            x, y, w, h = cfg.crop
            image = image[y : y + h, x : x + w]
        if cfg.resize is not None and image.shape[1::-1] != tuple(cfg.resize):
            import cv2

            image = cv2.resize(image, tuple(cfg.resize), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(image, dtype=np.uint8)

    def read(self, newer_than_seq: int | None = None) -> Frame:
        """The newest frame (waiting for the first, or for one after ``newer_than_seq``).

        CameraUnavailableError if the camera stopped or no frame came within the timeout.
        """
        deadline = time.monotonic() + self.config.frame_timeout_s
        with self._lock:
            while True:
                if self._error is not None:
                    raise CameraUnavailableError(
                        f"{self.camera_id}: RealSense {self.serial} stopped delivering frames "
                        f"({self._error}); check the cable, then restart the camera"
                    )
                frame = self._latest
                if frame is not None and (newer_than_seq is None or frame.seq > newer_than_seq):
                    return frame
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CameraUnavailableError(
                        f"{self.camera_id}: no frame from RealSense {self.serial} within "
                        f"{self.config.frame_timeout_s} s"
                    )
                self._lock.wait(left)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        try:
            self._pipeline.stop()
        except RuntimeError as exc:  # already stopped (a USB drop)
            log.info("%s: pipeline stop: %s", self.camera_id, exc)
