"""A fake pyrealsense2 with just the calls the driver makes: devices, a pipeline that produces
numbered color frames at a set rate, options on the color sensor, and unplugging."""

from __future__ import annotations

import threading
import time
from enum import Enum

import numpy as np


class camera_info(Enum):  # noqa: N801 - mirrors pyrealsense2's names
    serial_number = 1
    name = 2
    firmware_version = 3


class stream(Enum):  # noqa: N801
    color = 1


class format(Enum):  # noqa: N801
    rgb8 = 1


class option(Enum):  # noqa: N801
    enable_auto_exposure = 1
    exposure = 2


class FakeDevice:
    def __init__(self, serial: str, modes: set[tuple[int, int, int]] | None = None) -> None:
        self.serial = serial
        self.modes = modes or {(640, 480, 30), (1280, 720, 30), (640, 480, 60)}
        self.options: dict[option, float] = {option.enable_auto_exposure: 1.0}
        self.unplugged = threading.Event()

    def get_info(self, info: camera_info) -> str:
        return {
            camera_info.serial_number: self.serial,
            camera_info.name: "Intel RealSense D435 (fake)",
            camera_info.firmware_version: "5.15.0.2",
        }[info]

    def first_color_sensor(self) -> FakeDevice:
        return self

    def set_option(self, which: option, value: float) -> None:
        self.options[which] = value


class FakeRealSense:
    """Stands in for the pyrealsense2 module; ``devices`` are what is 'plugged in'."""

    camera_info, stream, format, option = camera_info, stream, format, option

    def __init__(self, *devices: FakeDevice) -> None:
        self.devices = list(devices)
        self.pipelines: list[_Pipeline] = []

    def context(self) -> _Context:
        return _Context(self)

    def config(self) -> _Config:
        return _Config()

    def pipeline(self) -> _Pipeline:
        pipe = _Pipeline(self)
        self.pipelines.append(pipe)
        return pipe


class _Context:
    def __init__(self, rs: FakeRealSense) -> None:
        self.rs = rs

    def query_devices(self) -> list[FakeDevice]:
        return [d for d in self.rs.devices if not d.unplugged.is_set()]


class _Config:
    serial = ""
    mode = (0, 0, 0)

    def enable_device(self, serial: str) -> None:
        self.serial = serial

    def enable_stream(self, which, width, height, fmt, fps) -> None:
        assert which is stream.color and fmt is format.rgb8
        self.mode = (width, height, fps)


class _Frame:
    def __init__(self, image: np.ndarray, number: int) -> None:
        self.image, self.number = image, number

    def __bool__(self) -> bool:
        return True

    def get_data(self) -> np.ndarray:
        return self.image

    def get_frame_number(self) -> int:
        return self.number

    def get_color_frame(self) -> _Frame:
        return self


class _Profile:
    def __init__(self, device: FakeDevice) -> None:
        self.device = device

    def get_device(self) -> FakeDevice:
        return self.device


class _Pipeline:
    def __init__(self, rs: FakeRealSense) -> None:
        self.rs = rs
        self.device: FakeDevice | None = None
        self.mode = (0, 0, 0)
        self.number = 0
        self.stopped = False

    def start(self, config: _Config) -> _Profile:
        device = next(d for d in self.rs.devices if d.serial == config.serial)
        if config.mode not in device.modes:
            raise RuntimeError("Couldn't resolve requests")
        self.device, self.mode = device, config.mode
        return _Profile(device)

    def wait_for_frames(self, timeout_ms: int) -> _Frame:
        assert self.device is not None
        width, height, fps = self.mode
        if self.device.unplugged.wait(1.0 / fps):
            raise RuntimeError("Frame didn't arrive within 5000")
        self.number += 1
        image = np.zeros((height, width, 3), np.uint8)
        image[:, :, 0] = np.arange(width, dtype=np.uint32)[None, :] % 256  # x ramp
        image[:, :, 1] = np.arange(height, dtype=np.uint32)[:, None] % 256  # y ramp
        image[:, :, 2] = self.number % 256
        return _Frame(image, self.number)

    def stop(self) -> None:
        if self.stopped:
            raise RuntimeError("stop() cannot be called before start()")
        self.stopped = True
        time.sleep(0)
