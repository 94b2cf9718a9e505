"""``robot-rl cameras crop`` on a fake RealSense (a synthetic frame: red = x, green = y) and a temp
session config: the box lands in camera_crops with the comments and other keys kept, the preview
is the crop the publisher will send, bad boxes and missing cameras are one-line errors that leave
the file as it was, and the session passes the box to the publisher as --crop."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import yaml

from robot_rl import cli
from robot_rl.cli.camera_crop import edit_crops, fit_aspect
from robot_rl.cli.errors import CliError
from robot_rl.config import load_config
from robot_rl.runtime.session import SessionConfig
from tests.hardware.fake_realsense import FakeDevice, FakeRealSense

cv2 = pytest.importorskip("cv2")

SESSION = """\
# A real session (comment kept)
train: pick_cube_pixels.yaml   # the training config
camera_processes:
  # the RealSense host
  - publish --camera front=77 --crop front=0,0,640,480 --resize 128 --endpoint tcp://0.0.0.0:5570
set:
  - name=pick   # run name
"""


@pytest.fixture()
def session(tmp_path):
    path = tmp_path / "session.yaml"
    path.write_text(SESSION)
    return path


@pytest.fixture()
def camera(monkeypatch):
    from robot_rl.hardware import realsense

    monkeypatch.setattr(realsense, "load_backend", lambda: FakeRealSense(FakeDevice("77")))


def _crop(tmp_path, *flags: str) -> int:
    return cli.main(["cameras", "crop", "--camera", "front", "--out", str(tmp_path / "out"),
                     *flags])  # fmt: skip


@pytest.fixture()
def saved_frame(tmp_path):
    """A 640 x 480 frame saved as PNG (the --image source: no camera needed)."""
    path = tmp_path / "saved.png"
    cv2.imwrite(str(path), np.full((480, 640, 3), 90, np.uint8))
    return str(path)


def _rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_the_box_lands_in_the_config_with_comments_kept(tmp_path, session, camera, capsys):
    assert _crop(tmp_path, "--serial", "77", "--box", "80,0,480,480", "--config",
                 str(session)) == 0  # fmt: skip
    text = session.read_text()
    for line in SESSION.splitlines():
        if "#" in line:
            assert line.split("#", 1)[1] in text  # every comment survives
    data = yaml.safe_load(text)
    assert data["camera_crops"] == {"front": [80, 0, 480, 480]}
    assert data["train"] == "pick_cube_pixels.yaml" and data["set"] == ["name=pick"]
    assert "--crop" not in data["camera_processes"][0]  # the file's box replaces the flag
    assert "dropped --crop front=0,0,640,480" in capsys.readouterr().out
    # The session hands the box to the publisher.
    config = load_config(SessionConfig, session)
    args = config.camera_args(config.camera_processes[0])
    assert args[-2:] == ["--crop", "front=80,0,480,480"]
    # The PNGs: the frame, its grid, the box drawn on it, and the 128 x 128 crop that starts at
    # x = 80, y = 0 (the fake paints x in red and y in green; 480 -> 128 averages 3.75 pixels).
    out = tmp_path / "out"
    assert _rgb(out / "front_frame.png").shape == (480, 640, 3)
    assert _rgb(out / "front_grid.png").shape == (480, 640, 3)
    assert (out / "front_box.png").is_file()
    preview = _rgb(out / "front_crop.png")
    assert preview.shape == (128, 128, 3)
    assert 80 <= preview[0, 0, 0] <= 84 and preview[0, 0, 1] <= 4
    assert 44 <= preview[0, -1, 0] <= 48  # x 556..560; red is x mod 256

    # Again with another box: the entry is replaced, nothing is duplicated.
    lines = len(text.splitlines())
    assert _crop(tmp_path, "--image", str(out / "front_frame.png"), "--box", "100,20,400,400",
                 "--config", str(session)) == 0  # fmt: skip
    again = session.read_text()
    assert len(again.splitlines()) == lines and again.count("front:") == 1
    assert yaml.safe_load(again)["camera_crops"] == {"front": [100, 20, 400, 400]}


def test_a_box_outside_the_frame_is_refused_and_the_file_kept(tmp_path, session, saved_frame,
                                                              caplog):  # fmt: skip
    caplog.set_level(logging.ERROR)
    for box, says in (("400,0,480,480", "spans x 400..880"), ("0,0,0,10", "no area"),
                      ("-1,0,10,10", "does not fit"), ("1,2,3", "X,Y,W,H")):  # fmt: skip
        caplog.clear()
        assert _crop(tmp_path, "--image", saved_frame, f"--box={box}", "--config",
                     str(session)) == 2  # fmt: skip
        assert says in caplog.text and len(caplog.records) == 1
        assert "\n" not in caplog.records[0].getMessage()
    assert session.read_text() == SESSION


def test_a_missing_camera_is_one_line_and_the_file_kept(tmp_path, session, monkeypatch, caplog):
    from robot_rl.hardware import realsense

    caplog.set_level(logging.ERROR)
    monkeypatch.setattr(realsense, "load_backend", lambda: FakeRealSense())  # none plugged in
    assert _crop(tmp_path, "--box", "0,0,10,10", "--config", str(session)) == 2
    assert "no RealSense camera connected" in caplog.text and len(caplog.records) == 1
    caplog.clear()
    monkeypatch.setattr(realsense, "load_backend", lambda: FakeRealSense(FakeDevice("77")))
    assert _crop(tmp_path, "--serial", "123", "--box", "0,0,10,10") == 2
    assert "123 not connected" in caplog.text
    caplog.clear()
    assert _crop(tmp_path, "--image", str(tmp_path / "nope.png"), "--box", "0,0,10,10") == 2
    assert "nope.png is not a readable image" in caplog.text
    assert session.read_text() == SESSION


def test_without_a_box_only_the_frames_are_saved(tmp_path, session, camera, capsys) -> None:
    assert _crop(tmp_path, "--config", str(session)) == 0
    assert "run again with --box X,Y,W,H" in capsys.readouterr().out
    assert (tmp_path / "out" / "front_grid.png").is_file()
    assert session.read_text() == SESSION


def test_interactive_without_a_display_says_what_to_do(tmp_path, saved_frame, monkeypatch,
                                                       caplog):  # fmt: skip
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert _crop(tmp_path, "--image", saved_frame, "--interactive") == 2
    assert "needs a display" in caplog.text and "--box X,Y,W,H" in caplog.text


def test_fit_aspect_trims_about_the_centre_and_says_so(tmp_path, saved_frame, capsys) -> None:
    assert fit_aspect((80, 0, 500, 480), 128, 128) == (90, 0, 480, 480)
    assert fit_aspect((0, 10, 300, 320), 128, 128) == (0, 20, 300, 300)
    assert fit_aspect((0, 0, 640, 480), 160, 120) == (0, 0, 640, 480)  # already 4:3
    assert _crop(tmp_path, "--image", saved_frame, "--box", "80,0,500,480", "--fit-aspect") == 0
    assert "box 80,0,500,480 trimmed to 90,0,480,480" in capsys.readouterr().out
    assert _crop(tmp_path, "--image", saved_frame, "--box", "0,0,640,480") == 0
    assert "stretches it by 1.33:1" in capsys.readouterr().out


def test_the_yaml_edit_keeps_other_cameras_and_refuses_what_it_cannot_edit() -> None:
    text = "train: x.yaml\ncamera_crops:   # boxes\n  wrist: [0, 0, 10, 10]  # keep\n\nset: []"
    edited, notes = edit_crops(text, "front", (1, 2, 3, 4))
    assert edited == ("train: x.yaml\ncamera_crops:   # boxes\n  wrist: [0, 0, 10, 10]  # keep\n"
                      "  front: [1, 2, 3, 4]\n\nset: []\n")  # fmt: skip
    assert notes == []
    edited, _ = edit_crops(edited, "wrist", (5, 6, 7, 8))
    assert "  wrist: [5, 6, 7, 8]  # keep\n" in edited
    assert edit_crops("camera_crops: {}\n", "front", (1, 2, 3, 4))[0] == (
        "camera_crops:\n  front: [1, 2, 3, 4]\n")  # fmt: skip
    assert edit_crops("camera_crops: {}  # none yet\n", "front", (1, 2, 3, 4))[0] == (
        "camera_crops:  # none yet\n  front: [1, 2, 3, 4]\n")  # fmt: skip
    with pytest.raises(CliError, match="inline"):
        edit_crops("camera_crops: {wrist: [0, 0, 1, 1]}\n", "front", (1, 2, 3, 4))


def test_the_session_refuses_a_crop_it_cannot_apply(tmp_path) -> None:
    spec = ("publish --camera front=1 --camera wrist=2 --crop wrist=0,0,9,9",)
    ok = SessionConfig(train="t.yaml", camera_processes=spec, camera_crops={"front": (1, 2, 3, 4)})
    assert ok.camera_args(spec[0])[-2:] == ["--crop", "front=1,2,3,4"]
    with pytest.raises(ValueError, match="no camera_processes entry publishes it"):
        SessionConfig(train="t.yaml", camera_processes=spec, camera_crops={"side": (0, 0, 1, 1)})
    with pytest.raises(ValueError, match="cropped by both"):
        SessionConfig(train="t.yaml", camera_processes=spec, camera_crops={"wrist": (0, 0, 1, 1)})
    with pytest.raises(ValueError, match="width and height >= 1"):
        SessionConfig(train="t.yaml", camera_processes=spec, camera_crops={"front": (0, 0, 0, 1)})


def test_the_box_can_be_read_from_a_running_stream_and_a_missing_one_is_one_line(
    tmp_path, caplog
) -> None:
    import threading
    import time

    from robot_rl.interfaces import Frame
    from robot_rl.transport.camera_stream import CameraPublisher
    from tests.netutil import PLAIN

    image = np.zeros((240, 320, 3), np.uint8)
    image[:, 160:] = (0, 200, 0)  # the right half green
    publisher = CameraPublisher("tcp://127.0.0.1:0", PLAIN)
    done = threading.Event()

    def publish() -> None:  # until the tool has its frame (a subscriber joins late)
        seq = 0
        while not done.is_set():
            publisher.publish(Frame(image, time.monotonic(), seq, "front"))
            seq += 1
            done.wait(0.02)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        argv = ["--endpoint", publisher.endpoint, "--plaintext", "--box", "160,40,160,160"]
        assert _crop(tmp_path, *argv) == 0
    finally:
        done.set()
        thread.join(timeout=5.0)
        publisher.close()
    preview = _rgb(tmp_path / "out" / "front_crop.png")
    assert preview.shape == (128, 128, 3) and (preview[..., 1] == 200).all()  # all green
    caplog.set_level(logging.ERROR)
    assert _crop(tmp_path, "--endpoint", publisher.endpoint, "--plaintext", "--timeout", "0.3",
                 "--box", "0,0,10,10") == 2  # fmt: skip
    assert "is `robot-rl cameras publish` running there" in caplog.text
    assert len(caplog.records) == 1
    caplog.clear()
    assert _crop(tmp_path, "--device", "97", "--box", "0,0,10,10") == 2  # no /dev/video97
    assert "no camera at OpenCV index 97" in caplog.text and len(caplog.records) == 1


def test_a_file_that_is_not_a_session_config_is_left_as_it_was(tmp_path) -> None:
    from robot_rl.cli.camera_crop import write_crop

    rig = tmp_path / "rig.yaml"
    rig.write_text("franka:\n  robot_ip: 172.16.0.2   # the FCI\n")
    with pytest.raises(CliError, match="not changed"):
        write_crop(rig, "front", (0, 0, 10, 10))
    assert rig.read_text() == "franka:\n  robot_ip: 172.16.0.2   # the FCI\n"
    assert [p.name for p in tmp_path.iterdir()] == ["rig.yaml"]  # no temp file left behind
    with pytest.raises(CliError, match="does not exist"):
        write_crop(tmp_path / "nope.yaml", "front", (0, 0, 10, 10))


def test_interactive_with_a_headless_opencv_says_what_to_do(tmp_path, saved_frame, monkeypatch,
                                                            caplog):  # fmt: skip
    import re

    if not re.search(r"GUI:\s+NONE", cv2.getBuildInformation()):
        pytest.skip("this OpenCV has a GUI; the test needs the headless build")
    monkeypatch.setenv("DISPLAY", ":99")
    assert _crop(tmp_path, "--image", saved_frame, "--interactive") == 2
    assert "cannot open a window" in caplog.text and "pip install opencv-python" in caplog.text
    assert len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()


def test_a_publisher_started_by_hand_takes_the_crops_from_the_session(session, monkeypatch,
                                                                      caplog) -> None:  # fmt: skip
    from robot_rl.hardware import realsense

    opened = {}

    def camera(config):  # record what the publisher would open, then stop it there
        opened[config.camera_id] = config.crop
        raise realsense.CameraUnavailableError("stopped by the test")

    monkeypatch.setattr(realsense, "RealSenseCamera", camera)
    session.write_text(SESSION.replace(" --crop front=0,0,640,480", "")
                       + "camera_crops:\n  front: [80, 0, 480, 480]\n")  # fmt: skip
    argv = ["cameras", "publish", "--camera", "front=77", "--plaintext", "--crops-from",
            str(session)]  # fmt: skip
    assert cli.main(argv) == 2 and "stopped by the test" in caplog.text
    assert opened == {"front": (80, 0, 480, 480)}
    caplog.clear()
    assert cli.main([*argv, "--crop", "front=0,0,10,10"]) == 2
    assert "has a --crop and a crop in" in caplog.text
    caplog.clear()
    assert cli.main([*argv, "--width", "320", "--height", "240"]) == 2  # the box needs 640x480
    assert "does not fit a 320x240" in caplog.text
