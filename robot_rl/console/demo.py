"""A running console without a learner: the twin (in-process, front and wrist cameras) stepped by
a resting policy through the ``ConsoleBridge``, served on loopback. For the browser tests and the
README's screenshots (``python -m robot_rl.console.demo --screenshots docs/console``).

The actor thread here is the smallest loop that uses the bridge as the runtime does: controls
before each step, the step, ``after_step``, episode ends with the operator's marks.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.console.bridge import OperatorSetup, operator_setup
from robot_rl.console.server import ConsoleConfig
from robot_rl.endpoints import DEFAULT_ENDPOINTS


@dataclass
class DemoConsole:
    """The twin behind the console, stepped on a thread; ``stop`` ends it."""

    setup: OperatorSetup
    env: Any
    stop_event: threading.Event = field(default_factory=threading.Event)
    steps: int = 0  # env steps taken (a counter tests wait on)
    episodes: int = 0
    thread: threading.Thread | None = None
    error: BaseException | None = None

    @property
    def url(self) -> str:
        assert self.setup.server is not None
        return str(self.setup.server.url)

    def start(self) -> DemoConsole:
        self.thread = threading.Thread(target=self._run, name="demo-actor", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        bridge = self.setup.bridge
        assert bridge is not None
        env = self.setup.env
        try:
            obs, _ = env.reset(seed=0)
            bridge.start_episode()
            episode_return, interventions = 0.0, 0
            policy = np.zeros(env.action_space.shape, np.float32)
            while not self.stop_event.is_set():
                request = bridge.before_step(wait_s=0.05, should_stop=self.stop_event.is_set)
                if self.stop_event.is_set():
                    break
                obs, reward, terminated, truncated, info = env.step(policy)
                self.steps += 1
                episode_return += float(reward)
                interventions += bool(info.get("intervened"))
                info.setdefault("policy_action", policy)
                bridge.after_step(obs, policy, info, episode_return)
                if request.label is not None:
                    info["operator_label"] = request.label
                if terminated or truncated or request.label or request.reset:
                    bridge.end_episode(info, episode_return, interventions, bridge.steps)
                    self.episodes += 1
                    obs, _ = env.reset(seed=self.episodes)
                    bridge.start_episode()
                    episode_return, interventions = 0.0, 0
        except BaseException as exc:  # surfaced to the caller through ``error``
            self.error = exc
            raise

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.setup.close()
        self.env.close()


def demo_console(image_size: int = 96, port: int = 0, max_episode_steps: int = 200) -> DemoConsole:
    """Start the twin (reach, pixels from front and wrist) with the console on ``port``."""
    from robot_rl.envs.twin_env import TwinEnv, TwinEnvConfig
    from robot_rl.teleop_command import TeleopConfig

    config = TwinEnvConfig(
        task="reach",
        obs="pixels",
        image_width=image_size,
        image_height=image_size,
        max_episode_steps=max_episode_steps,
    )
    env = TwinEnv(config)
    setup = operator_setup(
        env,
        ConsoleConfig(enabled=True, port=port),
        TeleopConfig(device="console"),
        None,
        list(config.cameras),
    )
    return DemoConsole(setup, env).start()


def set_viewport(browser: Any, width: int, height: int) -> None:
    """Size the window so the page's viewport (innerWidth x innerHeight) is width x height."""
    browser.set_window_size(width, height)
    for _ in range(5):  # window chrome differs between builds: measure and correct
        inner = browser.execute_script("return [innerWidth, innerHeight]")
        if inner == [width, height]:
            return
        outer = browser.get_window_size()
        browser.set_window_size(outer["width"] + width - inner[0],
                                outer["height"] + height - inner[1])  # fmt: skip
    raise RuntimeError(f"could not size the viewport to {width}x{height}")


def save_screenshots(out_dir: Path, chromium: str, driver: str) -> list[Path]:
    """Screenshots of a running demo console at 1600x1000 and 800x600 under ``out_dir``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    demo = demo_console(image_size=128)
    hub = demo.setup.hub
    assert hub is not None
    paths = []
    try:
        for episode in range(12):  # some history for the charts
            hub.end_episode(episode % 3 != 0, 0.2 * episode, 0.1 * (episode % 4))
            hub.update(utd=0.5 * episode, loss=2.0 / (1 + episode))
        hub.update(
            utd_target=4.0,
            weight_age_s=3.2,
            weights_version=41,
            updates_per_s=18.5,
            steps_stored=1840,
            steps_held=24,
            demo_buffer=20,
            online_buffer=1840,
        )
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ):
            options.add_argument(flag)
        browser = webdriver.Chrome(service=Service(driver), options=options)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            steps = demo.steps
            hub.control("take_over")  # some operator steps on the timeline
            while demo.steps < steps + 15 and demo.thread is not None and demo.thread.is_alive():
                hub.wait_change(hub.version, 0.1)
            hub.control("hand_back")
            for width, height in ((1600, 1000), (800, 600)):
                browser.get(demo.url)
                set_viewport(browser, width, height)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and browser.execute_script(
                    "return window.consoleStats.frames < 6 || window.consoleStats.states < 3"
                ):
                    time.sleep(0.1)
                time.sleep(1.0)  # let a few steps of the timeline draw
                fresh = "return Object.values(window.consoleFrameAges()).every((a) => a < 300)"
                deadline = time.monotonic() + 10  # a loaded machine renders slowly: pick a
                while time.monotonic() < deadline and not browser.execute_script(fresh):
                    time.sleep(0.02)  # moment with fresh frames (the stale overlay is real)
                path = out_dir / f"console_{width}x{height}.png"
                browser.save_screenshot(str(path))
                paths.append(path)
        finally:
            browser.quit()
    finally:
        demo.stop()
    return paths


def main(argv: list[str] | None = None) -> int:
    import shutil

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshots", type=Path, help="save screenshots into this folder")
    parser.add_argument("--port", type=int, default=DEFAULT_ENDPOINTS.console_port)
    args = parser.parse_args(argv)
    if args.screenshots is not None:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        driver = shutil.which("chromedriver")
        if not chromium or not driver:
            raise SystemExit(
                "screenshots need chromium and chromedriver (apt-get install "
                "chromium chromium-driver)"
            )
        for path in save_screenshots(args.screenshots, chromium, driver):
            print(path)
        return 0
    demo = demo_console(port=args.port)
    print(f"operator console: {demo.url} (Ctrl-C ends)", flush=True)
    try:
        while demo.thread is not None and demo.thread.is_alive():
            demo.thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        demo.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
