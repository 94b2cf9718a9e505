"""``robot-rl bench console``: how fast the operator sees the arm and the arm obeys the operator.

Everything runs on loopback, as a sim session would: the twin behind a robot server (``robot-rl
robot-server``, its own process, as ``session start`` runs it), a ``RemoteEnv`` paced at 10 Hz
with the operator as its intervener, the console server, the cameras of that twin forwarded into
the console, and a headless Chromium (Selenium, Debian's chromium + chromedriver) with the
console page open.

The cameras are ``robot-rl cameras mirror-twin --camera NAME``, one process per camera (front
and wrist, 128x128, ``CAMERA_FPS`` each): a render-only mirror of the served arm that renders,
on each round, the next state the server publishes. A rig's cameras are separate devices: one
camera's exposure and readout never wait for another's. One process rendering both cameras
in turn would make the second camera's frame wait for the first camera's render (about 23 ms
of TinyRenderer CPU) on top of its own, a delay no rig has; so each camera is its own process.
Their frames are not synchronized with each other, which the console does not need (a pixel
policy does: its sessions keep one process for all cameras, one stamp per round).

- ``stream_latency_ms_p95``: from a frame's capture to the page showing it, measured by the page
  (``Date.now()`` minus the frame's capture stamp; same machine clock). The capture stamp is
  when the robot server sent the state the frame shows (the arm was in that pose then; the
  state's ``published_wall_s``), so the state's trip to the mirror, the render, the camera
  stream, the console's JPEG encoding, the websocket and the page's decode all count. Where it
  goes, each in ms from the capture stamp: ``stream_published_ms_*`` (sent by the camera
  process: the state's trip and the render, a camera's exposure and readout),
  ``stream_arrived_ms_*`` (arrived in the console's process: ZMQ and the receive thread),
  ``stream_picked_ms_*`` (taken by the console's camera forwarder, which sleeps until a frame
  arrives), ``stream_encoded_ms_*`` (JPEG encoded), ``stream_sent_ms_*`` (written on the page's
  websocket) and ``stream_page_received_ms_*`` (arrived on the page's websocket, by its clock);
  the rest is the browser's JPEG decode and display. Measured after ``WARMUP_S`` of streaming to
  the open page (a browser starting up is not the stream).
- ``takeover_latency_ms_p95``: from the key press on the page (its ``Date.now()`` at keydown) to
  the robot client sending the first target of the operator's action. The press of "t" (take
  over) is repeated ``presses`` times, with "h" (hand back) and a random pause between.
- ``frame_age_ms_paused_p95``: the age of the camera frame on the page (now minus its capture
  stamp, sampled by the page at random instants, every camera) while the actor loop is paused:
  camera streams reach the page through the console's forwarder, not the policy loop, so it must
  stay near its running figure (``frame_age_ms_running_p95``, sampled the same way in the same
  run just before the pause; ``frame_age_paused_ratio_vs_running`` compares the two). The
  publisher's frame period (``camera_period_ms``) sets its floor: the age runs from the stream
  latency up to the latency plus one period.

On a quiet machine the largest part of the stream's latency is the twin's render (TinyRenderer,
about 23 ms of CPU per camera whatever the image size: its cost is the Panda's meshes), which
stands in for a camera's exposure and readout; the console's own part (``stream_sent_ms`` minus
``stream_arrived_ms``) is a few ms. No stage waits on a period: the mirror renders as the
state arrives, the subscriber's thread and the forwarder wake on each frame, and the server's
push loop on each encoded frame; the subscriber, the forwarder and the hub keep only each
camera's newest frame (the ZMQ queues between processes hold at most 8). Every figure depends
on the machine's load, so the JSON carries the 1-minute load average at the start and the end
(``load_avg_1min_*``): on 2 cores the bench itself (robot server, mirrors, browser, console)
keeps more than one busy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

WARMUP_S = 2.0  # after the page shows its first frames, before anything is measured
CAMERA_FPS = 10.0  # each twin camera's rate (a render is ~23 ms of CPU)
CAMERAS = ("front", "wrist")  # one mirror-twin process each


def run_console_bench(seed: int = 0, quick: bool = False) -> dict[str, float | str]:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        raise ValueError(
            "bench console drives a real browser: apt-get install chromium chromium-driver"
        )
    from robot_rl.console.bridge import operator_setup
    from robot_rl.console.forwarder import CameraForwarder
    from robot_rl.console.server import ConsoleConfig
    from robot_rl.envs.remote_env import RemoteEnv
    from robot_rl.envs.twin_env import TwinEnvConfig
    from robot_rl.teleop_command import TeleopConfig
    from robot_rl.transport.camera_stream import CameraSubscriber
    from robot_rl.transport.robot_server import (
        RobotClient,
        RobotEndpoints,
    )
    from robot_rl.transport.security import SecurityConfig

    load_start = os.getloadavg()[0]
    rng = np.random.default_rng(seed)
    presses = 8 if quick else 40
    ports = [_free_port() for _ in range(2)]
    endpoints = RobotEndpoints(f"tcp://127.0.0.1:{ports[0]}", f"tcp://127.0.0.1:{ports[1]}")
    security = SecurityConfig(plaintext=True)
    with contextlib.ExitStack() as stack:  # whatever started is ended, also on an error
        _start([sys.executable, "-m", "robot_rl", "robot-server", "--task", "reach",
                "--plaintext", "--commands", endpoints.commands, "--state", endpoints.state],
               stack)  # its own process, as in a session: its 1 kHz loop, its GIL  # fmt: skip
        client = RobotClient(endpoints, security)
        stack.callback(client.close)
        client.latest(timeout_s=60.0)
        env = RemoteEnv(TwinEnvConfig(task="reach", obs="state"), client)
        stack.callback(env.close)
        teleop = TeleopConfig(device="console")
        setup = operator_setup(env, ConsoleConfig(enabled=True, port=0), teleop, None,
                               list(CAMERAS))  # fmt: skip
        stack.callback(setup.close)
        bridge, hub = setup.bridge, setup.hub
        assert bridge is not None and hub is not None and setup.server is not None
        takeover_ms: list[float] = []
        send_target = client.send_target

        def timed_send(target: Any, gripper: Any) -> None:
            send_target(target, gripper)
            if bridge.takeover_page_ms is not None and bridge.operator.in_control:
                takeover_ms.append(time.time() * 1e3 - bridge.takeover_page_ms)
                bridge.takeover_page_ms = None

        client.send_target = timed_send  # type: ignore[method-assign]
        camera_endpoints = []
        for camera in CAMERAS:  # one process per camera, as a rig has one device per camera
            camera_endpoints.append(f"tcp://127.0.0.1:{_free_port()}")
            _start([sys.executable, "-m", "robot_rl", "cameras", "mirror-twin", "--task", "reach",
                    "--plaintext", "--commands", endpoints.commands, "--state", endpoints.state,
                    "--endpoint", camera_endpoints[-1], "--fps", str(CAMERA_FPS),
                    "--camera", camera], stack)  # a render-only mirror of the twin  # fmt: skip
        subscriber = CameraSubscriber(camera_endpoints, security, list(CAMERAS))
        stack.callback(subscriber.close)
        stop = threading.Event()
        actor = threading.Thread(target=_act, args=(setup.env, bridge, stop), daemon=True)
        actor.start()
        stack.callback(actor.join, 5)
        stack.callback(stop.set)
        forwarder = CameraForwarder(subscriber, hub).start()
        stack.callback(forwarder.stop)
        browser = _browser(chromium, driver_path)
        stack.callback(browser.quit)
        browser.get(setup.server.url)
        _wait(lambda: browser.execute_script("return window.consoleStats.frames") >= 5, 30)
        time.sleep(WARMUP_S)  # the browser's start-up is not the stream's latency
        for series in (
            hub.stream_latency_ms,
            hub.encoded_ms,
            hub.sent_ms,
            hub.page_received_ms,
            forwarder.arrival_ms,
            forwarder.published_ms,
            forwarder.picked_ms,
        ):
            series.clear()
        from selenium.webdriver.common.by import By

        body = browser.find_element(By.TAG_NAME, "body")
        for _ in range(presses):
            count = len(takeover_ms)
            body.send_keys("t")
            _wait(lambda count=count: len(takeover_ms) > count, 5)
            time.sleep(0.2)
            body.send_keys("h")
            time.sleep(float(rng.uniform(0.15, 0.4)))  # land at random points of the 10 Hz step
        stream = list(hub.stream_latency_ms)
        samples = 30 if quick else 100
        ages_running = _frame_ages(browser, samples, rng)
        body.send_keys("p")  # pause the actor loop
        _wait(lambda: bridge.paused and bridge.holds >= 2, 5)
        shown_before = browser.execute_script("return window.consoleStats.frames")
        ages_paused = _frame_ages(browser, samples, rng)
        shown_paused = browser.execute_script("return window.consoleStats.frames") - shown_before
        body.send_keys("u")
    return {
        "stream_latency_ms_p95": float(np.percentile(stream, 95)),
        "stream_latency_ms_p50": float(np.percentile(stream, 50)),
        "takeover_latency_ms_p95": float(np.percentile(takeover_ms, 95)),
        "takeover_latency_ms_p50": float(np.percentile(takeover_ms, 50)),
        "frame_age_ms_paused_p95": float(np.percentile(ages_paused, 95)),
        "frame_age_ms_running_p95": float(np.percentile(ages_running, 95)),
        "frame_age_paused_ratio_vs_running": float(
            np.percentile(ages_paused, 95) / np.percentile(ages_running, 95)
        ),
        "frame_age_samples": len(ages_paused),
        "frames_shown_while_paused": int(shown_paused),
        "stream_published_ms_p95": float(np.percentile(list(forwarder.published_ms), 95)),
        "stream_published_ms_p50": float(np.percentile(list(forwarder.published_ms), 50)),
        "stream_arrived_ms_p95": float(np.percentile(list(forwarder.arrival_ms), 95)),
        "stream_arrived_ms_p50": float(np.percentile(list(forwarder.arrival_ms), 50)),
        "stream_picked_ms_p95": float(np.percentile(list(forwarder.picked_ms), 95)),
        "stream_picked_ms_p50": float(np.percentile(list(forwarder.picked_ms), 50)),
        "stream_encoded_ms_p95": float(np.percentile(list(hub.encoded_ms), 95)),
        "stream_sent_ms_p95": float(np.percentile(list(hub.sent_ms), 95)),
        "stream_encoded_ms_p50": float(np.percentile(list(hub.encoded_ms), 50)),
        "stream_sent_ms_p50": float(np.percentile(list(hub.sent_ms), 50)),
        "stream_page_received_ms_p95": float(np.percentile(list(hub.page_received_ms), 95)),
        "stream_page_received_ms_p50": float(np.percentile(list(hub.page_received_ms), 50)),
        "frames_measured": len(stream),
        "takeovers_measured": len(takeover_ms),
        "policy_period_ms": 100.0,
        "camera_period_ms": 1000.0 / CAMERA_FPS,
        "load_avg_1min_start": load_start,
        "load_avg_1min_end": os.getloadavg()[0],
        "seed": seed,
    }


def _start(argv: list[str], stack: contextlib.ExitStack) -> subprocess.Popen:
    """A child process whose output is dropped, ended when ``stack`` closes."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.callback(_end, process)
    return process


def _end(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _act(env: Any, bridge: Any, stop: threading.Event) -> None:
    """A 10 Hz actor with a resting policy: the operator's action goes out when they take over."""
    from robot_rl.runtime.actor import ActorLoop, NoRecorder

    rest = np.zeros(4, np.float32)
    loop = ActorLoop(env, lambda obs: rest, NoRecorder(), bridge=bridge, max_episode_steps=80)
    loop.run(should_stop=stop.is_set)


def _frame_ages(browser: Any, samples: int, rng: np.random.Generator) -> list[float]:
    """Every camera's on-page frame age (ms), sampled ``samples`` times at random instants
    (uniform 20-80 ms apart, so the samples do not lock to the 10 Hz frame clock)."""
    ages: list[float] = []
    for _ in range(samples):
        ages.extend(browser.execute_script("return window.consoleFrameAges()").values())
        time.sleep(float(rng.uniform(0.02, 0.08)))
    return ages


def _browser(chromium: str, driver_path: str) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver_path), options=options)


def _wait(condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.005)
    raise RuntimeError("bench console: timed out waiting for the page or the robot client")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
