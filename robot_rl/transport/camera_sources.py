"""Camera stream sources, and the one loop that publishes them (``robot-rl cameras ...``).

A source hands out its next frames, stamped with host monotonic time, each time it is asked:
- ``TwinExpertFrames``: the twin's cameras while its scripted expert works episode after episode
  (a stream with no robot, for viewers and the console);
- ``MirrorFrames``: the cameras of a twin that runs behind a robot server, rendered by a
  render-only mirror (``sim.mirror``) that follows the server's published joints and body poses;
- ``CameraFrames``: live cameras (RealSense), each one's newest frame as it comes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from robot_rl.interfaces import Frame
from robot_rl.sim.cameras import DEFAULT_CAMERAS, TWIN_CAMERAS, CameraSpec, twin_cameras
from robot_rl.sim.mirror import TwinMirror
from robot_rl.sim.scene import SceneConfig, TwinScene
from robot_rl.transport.camera_stream import CameraPublisher
from robot_rl.transport.robot_server import RemoteState, RobotClient

log = logging.getLogger(__name__)


class FrameSource(Protocol):
    """Frames for a publisher; ``next_frames`` may block until they are ready, or give none. A
    source that renders its cameras one after another yields each frame as it is ready, so the
    publisher sends it at once (a frame never waits for the next camera's render)."""

    def next_frames(self) -> Iterable[Frame]: ...

    def close(self) -> None: ...


def publish_frames(publisher: CameraPublisher, source: FrameSource, duration_s: float | None = None,
                   period_s: float = 0.0, stop: threading.Event | None = None) -> int:  # fmt: skip
    """Publish ``source``'s frames, one round every ``period_s`` at most (0: as they come), until
    ``duration_s`` has passed, ``stop`` is set or Ctrl-C (KeyboardInterrupt) ends it. Returns the
    number of frames published. Closing the source and the publisher is the caller's."""
    start = time.monotonic()
    next_round = start
    published = 0
    try:
        while duration_s is None or time.monotonic() - start < duration_s:
            if stop is not None and stop.is_set():
                break
            for frame in source.next_frames():
                publisher.publish(frame)
                published += 1
            next_round += period_s
            wait_s = next_round - time.monotonic()
            if wait_s > 0:
                time.sleep(wait_s)
            else:
                next_round = time.monotonic()  # behind: restart from now, no burst to catch up
    except KeyboardInterrupt:
        pass  # Ctrl-C is how an operator ends an open-ended stream
    return published


def square_cameras(size_px: int) -> tuple[CameraSpec, ...]:
    """The twin's default cameras (front and wrist), rendering ``size_px`` square images."""
    return tuple(dataclasses.replace(c, width=size_px, height=size_px) for c in DEFAULT_CAMERAS)


class TwinExpertFrames:
    """The twin's cameras while the task's scripted expert solves seeded episodes, one after
    another: each policy step renders every camera (the last step of a solved episode does not)."""

    def __init__(self, task: str, size_px: int) -> None:
        self.scene = TwinScene(SceneConfig(task=task, cameras=square_cameras(size_px)))
        self.camera_ids = list(self.scene.cameras)
        self._seed = 0
        self._expert = self.scene.task.expert()

    def next_frames(self) -> Iterator[Frame]:
        scene = self.scene
        action = self._expert.act(scene.twin)
        if scene.step(action.target, action.gripper).success or (
            scene.episode_time_s >= scene.task.max_episode_s
        ):
            self._seed += 1
            scene.reset(self._seed)
            self._expert = scene.task.expert()
            return
        # The twin stamps frames with sim time; the wire carries host time: every camera shows
        # the scene as it is now (one stamp, so they stay synchronized), and each frame goes
        # out as soon as it is rendered.
        stamp_s = time.monotonic()
        for camera in scene.cameras.values():
            yield dataclasses.replace(camera.read(), stamp_s=stamp_s)

    def close(self) -> None:
        self.scene.close()


class MirrorFrames:
    """The cameras of the twin behind a robot server: each round waits (up to ``state_timeout_s``)
    for the next state the server publishes, copies it into the mirror and renders ``cameras``
    (default every camera of the task).

    Every frame of a round is stamped with the time of the state it shows (``state_stamp_s``):
    the arm was in that pose then, so the state's trip to the mirror, the render and everything
    after it count as latency, as a camera's exposure and readout would. The cameras of one
    process render one after another, so a later camera's frame reaches the wire one render
    later than the first's; a rig's cameras are separate devices, so run one process per camera
    (``mirror-twin --camera``) to model them (the frames of separate processes are not
    synchronized, see ``--help``)."""

    def __init__(self, client: RobotClient, task: str, size_px: int, state_timeout_s: float = 1.0,
                 cameras: Sequence[str] | None = None) -> None:  # fmt: skip
        self.client = client
        specs = square_cameras(size_px)
        if cameras is not None:  # any of the twin's cameras, the opt-in side view included
            known = [spec.camera_id for spec in TWIN_CAMERAS]
            unknown = [c for c in cameras if c not in known]
            if unknown or not cameras or len(set(cameras)) != len(cameras):
                raise ValueError(f"cameras {list(cameras)}; expected distinct names among {known}")
            specs = twin_cameras(cameras, size_px, size_px)
        self.mirror = TwinMirror(SceneConfig(task=task, cameras=specs))
        self.camera_ids = list(self.mirror.scene.cameras)
        self.state_timeout_s = state_timeout_s
        self._seq = 0
        self._state_seq = 0  # the newest robot state rendered

    def next_frames(self) -> Iterator[Frame]:
        """Each camera's frame as soon as it is rendered, all stamped when the state they show
        arrived (see the class doc). ValueError if the server publishes no body poses (it runs
        no twin)."""
        try:  # the next state to arrive (the server publishes at >= 100 Hz): the freshest pose
            newest = self.client.latest(self.state_timeout_s, newer_than_seq=self._state_seq)
            remote = self.client.latest(self.state_timeout_s, newer_than_seq=newest.seq)
        except TimeoutError:
            log.warning("cameras: no new state from the robot server within %.1f s",
                        self.state_timeout_s)  # fmt: skip
            return
        if remote.bodies is None:
            raise ValueError("the robot server sends no body poses: it is not a twin")
        self._state_seq = remote.seq
        self.mirror.update(remote.state.q_rad, remote.state.gripper_width_m, remote.bodies)
        stamp_s = state_stamp_s(remote)
        self._seq += 1
        for name, camera in self.mirror.scene.cameras.items():
            yield Frame(camera.read().image, stamp_s, self._seq - 1, name)

    def close(self) -> None:
        self.mirror.close()


def state_stamp_s(remote: RemoteState) -> float:
    """When the server sent ``remote`` (its ``published_wall_s`` on this host's monotonic clock;
    never after the state arrived), else when it arrived: the capture time of a mirror's frame."""
    wall_s = remote.meta.get("published_wall_s")
    if isinstance(wall_s, bool) or not isinstance(wall_s, int | float) or not math.isfinite(wall_s):
        return remote.received_s
    return min(time.monotonic() - (time.time() - float(wall_s)), remote.received_s)


class LiveCamera(Protocol):
    """A camera that can wait for a frame newer than one it gave (``hardware.realsense``)."""

    @property
    def camera_id(self) -> str: ...

    def read(self, newer_than_seq: int | None = None) -> Frame: ...

    def close(self) -> None: ...


class CameraFrames:
    """Each live camera's next new frame, in turn (their own errors pass through)."""

    def __init__(self, cameras: Sequence[LiveCamera]) -> None:
        self.cameras = list(cameras)
        self.camera_ids = [c.camera_id for c in self.cameras]
        self._last = {c.camera_id: -1 for c in self.cameras}

    def next_frames(self) -> list[Frame]:
        frames = []
        for camera in self.cameras:
            frame = camera.read(newer_than_seq=self._last[camera.camera_id])
            self._last[camera.camera_id] = frame.seq
            frames.append(frame)
        return frames

    def close(self) -> None:
        for camera in self.cameras:
            camera.close()
