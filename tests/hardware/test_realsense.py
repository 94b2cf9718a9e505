"""The RealSense driver against a fake device layer: selection, modes, exposure, newest-frame
capture, crop and resize, unplugging, and `robot-rl cameras list`."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from robot_rl.hardware.realsense import (
    CameraUnavailableError,
    RealSenseCamera,
    RealSenseConfig,
    list_devices,
)

from tests.hardware.fake_realsense import FakeDevice, FakeRealSense, option


def test_devices_are_listed_with_serials() -> None:
    rs = FakeRealSense(FakeDevice("111"), FakeDevice("222"))
    assert [d["serial"] for d in list_devices(rs)] == ["111", "222"]
    assert list_devices(FakeRealSense()) == []


def test_serial_selection_and_clear_errors() -> None:
    with pytest.raises(CameraUnavailableError, match="no RealSense camera connected"):
        RealSenseCamera(RealSenseConfig(), FakeRealSense())
    two = FakeRealSense(FakeDevice("111"), FakeDevice("222"))
    with pytest.raises(CameraUnavailableError, match="set serial"):
        RealSenseCamera(RealSenseConfig(), two)
    with pytest.raises(CameraUnavailableError, match="333 not connected"):
        RealSenseCamera(RealSenseConfig(serial="333"), two)
    with pytest.raises(CameraUnavailableError, match="cannot stream 320x240"):
        RealSenseCamera(RealSenseConfig(serial="111", width=320, height=240), two)
    camera = RealSenseCamera(RealSenseConfig(serial="222"), two)
    assert camera.serial == "222"
    camera.close()


def test_manual_exposure_turns_auto_exposure_off() -> None:
    device = FakeDevice("111")
    camera = RealSenseCamera(RealSenseConfig(exposure_us=8000.0), FakeRealSense(device))
    assert device.options[option.enable_auto_exposure] == 0
    assert device.options[option.exposure] == 8000.0
    camera.close()


def test_read_gives_the_newest_frame_cropped_and_resized() -> None:
    config = RealSenseConfig(camera_id="wrist", fps=60, crop=(100, 50, 256, 256), resize=(128, 128))
    camera = RealSenseCamera(config, FakeRealSense(FakeDevice("111")))
    try:
        first = camera.read()
        later = camera.read(newer_than_seq=first.seq + 3)  # frames kept coming meanwhile
        assert later.seq > first.seq + 3
        assert later.camera_id == "wrist" and later.stamp_s > first.stamp_s
        assert later.image.shape == (128, 128, 3) and later.image.dtype == np.uint8
        # The fake paints x in red and y in green: the crop starts at (100, 50) and the 2x
        # area resize averages pairs, so the top-left pixel is about (100.5, 50.5).
        assert abs(int(later.image[0, 0, 0]) - 100) <= 1
        assert abs(int(later.image[0, 0, 1]) - 50) <= 1
    finally:
        camera.close()


def test_unplugging_is_a_clear_error_not_a_hang(caplog) -> None:
    device = FakeDevice("111")
    camera = RealSenseCamera(RealSenseConfig(frame_timeout_s=0.5), FakeRealSense(device))
    camera.read()
    with caplog.at_level(logging.ERROR):
        device.unplugged.set()
        with pytest.raises(CameraUnavailableError, match="stopped delivering frames"):
            for _ in range(100):
                camera.read(newer_than_seq=camera.read().seq)
    assert "capture stopped" in caplog.text
    camera.close()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"crop": (600, 0, 100, 100)}, "does not fit"),
        ({"exposure_us": -1.0}, "exposure_us"),
        ({"fps": 0}, "fps"),
        ({"resize": (0, 10)}, "resize"),
    ],
)
def test_bad_settings_are_rejected(changes, match) -> None:
    with pytest.raises(ValueError, match=match):
        RealSenseConfig(**changes)


def test_cameras_list_cli(monkeypatch, capsys) -> None:
    from robot_rl.hardware import realsense

    from robot_rl import cli

    monkeypatch.setattr(realsense, "load_backend", lambda: FakeRealSense())
    assert cli.main(["cameras", "list"]) == 1
    assert "no RealSense camera connected" in capsys.readouterr().out
    monkeypatch.setattr(realsense, "load_backend", lambda: FakeRealSense(FakeDevice("4242")))
    assert cli.main(["cameras", "list"]) == 0
    assert "4242" in capsys.readouterr().out


def test_cameras_list_without_the_driver_says_how_to_install(monkeypatch, capsys) -> None:
    from robot_rl.hardware import realsense

    from robot_rl import cli

    def missing():
        raise CameraUnavailableError("pyrealsense2 is not installed; install the hardware extra")

    monkeypatch.setattr(realsense, "load_backend", missing)
    assert cli.main(["cameras", "list"]) == 1
    assert "hardware extra" in capsys.readouterr().out


def test_cameras_publish_streams_realsense_frames_and_says_when_unplugged(
    monkeypatch, caplog
) -> None:
    import threading

    from robot_rl.hardware import realsense

    from robot_rl import cli
    from robot_rl.transport.camera_stream import CameraSubscriber
    from robot_rl.transport.security import SecurityConfig
    from tests.netutil import free_port

    monkeypatch.setattr(realsense, "load_backend", lambda: FakeRealSense())
    assert cli.main(["cameras", "publish", "--camera", "front=", "--plaintext",
                     "--endpoint", f"tcp://127.0.0.1:{free_port()}"]) == 2  # fmt: skip
    assert "no RealSense camera connected" in caplog.text
    monkeypatch.setattr(realsense, "load_backend", lambda: FakeRealSense(FakeDevice("77")))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    subscriber = CameraSubscriber([endpoint], SecurityConfig(plaintext=True), ["front"])
    argv = ["cameras", "publish", "--camera", "front=77", "--plaintext", "--endpoint", endpoint,
            "--resize", "64", "--duration", "2"]  # fmt: skip
    codes = []
    runner = threading.Thread(target=lambda: codes.append(cli.main(argv)))
    runner.start()
    runner.join(timeout=20)
    received = subscriber.latest("front")
    subscriber.close()
    assert codes == [0]
    assert received is not None and received.frame.image.shape == (64, 64, 3)
