"""The console page in a real headless Chromium, as an operator uses it: the stale overlay, the stop
banner, no focus trap after a click, both cameras kept, the disconnected banner, and STOP on
screen at 800x600. The twin runs in-process behind the console (``robot_rl.console.demo``); no
learner. Nothing here is timed: each check waits for an event or a counter."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from robot_rl.console.demo import DemoConsole, demo_console, set_viewport
from robot_rl.console.hub import ConsoleHub
from robot_rl.console.server import ConsoleConfig, ConsoleServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def wait_for(condition: Callable[[], object], timeout_s: float = 30.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def stats(browser) -> dict:
    """The page's counters (an empty dict before its script ran)."""
    return browser.execute_script("return window.consoleStats || {}")


def open_page(browser, url: str, width: int = 1280, height: int = 900) -> None:
    browser.get(url)
    set_viewport(browser, width, height)
    wait_for(lambda: stats(browser).get("connected") and stats(browser)["states"], what="state")


@pytest.fixture
def demo() -> Iterator[DemoConsole]:
    console = demo_console(image_size=48)
    try:
        yield console
    finally:
        console.stop()


class FrameFeed:
    """An actor loop that publishes camera frames each step until paused (no forwarder)."""

    def __init__(self, hub: ConsoleHub) -> None:
        self.hub = hub
        self.running = threading.Event()
        self.running.set()
        self.done = threading.Event()
        self.published = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        image = np.full((32, 32, 3), 90, np.uint8)
        while not self.done.is_set():
            if self.running.wait(0.05) and not self.done.is_set():
                self.published += self.hub.publish_frames({"front": image, "wrist": image})
                self.done.wait(0.05)


@pytest.fixture
def bare() -> Iterator[tuple[ConsoleServer, ConsoleHub, FrameFeed]]:
    hub = ConsoleHub()
    server = ConsoleServer(hub, ConsoleConfig(port=0), ["front", "wrist"])
    server.start()
    feed = FrameFeed(hub)
    try:
        yield server, hub, feed
    finally:
        feed.done.set()
        feed.thread.join(5)
        server.stop()


def test_stale_overlay_appears_when_frames_stop_and_goes_when_they_resume(bare, browser) -> None:
    from selenium.webdriver.common.by import By

    server, _, feed = bare
    open_page(browser, server.url)
    wait_for(lambda: stats(browser)["frames"] >= 4, what="frames")
    overlay = browser.find_element(By.ID, "stale-front")
    assert not overlay.is_displayed()
    feed.running.clear()  # the actor pauses and nothing else sends frames
    wait_for(lambda: overlay.is_displayed(), what="the stale overlay")
    assert "STALE" in overlay.text and "s old" in overlay.text
    assert stats(browser)["frameAgeMs"]["front"] > 500  # the threshold the overlay shows past
    feed.running.set()
    wait_for(lambda: not overlay.is_displayed(), what="the overlay to go")


def test_the_paused_demo_keeps_camera_frames_fresh(demo, browser) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, demo.url)
    wait_for(lambda: stats(browser)["frames"] >= 4, what="frames")
    bridge, hub = demo.setup.bridge, demo.setup.hub
    browser.find_element(By.TAG_NAME, "body").send_keys("p")
    wait_for(lambda: bridge.paused and bridge.holds >= 3, what="the actor holding")
    steps = demo.steps
    seq = int(browser.find_element(By.ID, "cam-front").get_attribute("data-seq"))
    holds = bridge.holds
    wait_for(lambda: bridge.holds >= holds + 10, what="ten more hold cycles")
    wait_for(lambda: int(browser.find_element(By.ID, "cam-front").get_attribute("data-seq")) > seq,
             what="a new frame while paused")  # fmt: skip
    assert demo.steps == steps  # the policy loop did not step
    assert not stats(browser)["stale"]["front"] and "PAUSED" in stats(browser)["banner"]
    assert hub.snapshot()["paused"] is True


def test_stop_shows_a_full_width_banner_and_the_badge_agrees(demo, browser) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, demo.url)
    banner = browser.find_element(By.ID, "banner")
    badge = browser.find_element(By.ID, "control")
    assert not banner.is_displayed() and badge.text == "policy"
    browser.find_element(By.CSS_SELECTOR, 'button[data-control="stop"]').click()
    wait_for(lambda: banner.is_displayed() and "SOFTWARE STOP" in banner.text, what="banner")
    assert "STOPPED" in badge.text and "policy" not in badge.text
    assert demo.env.scene.loop.stopped  # the twin's loop damps and refuses targets
    width = browser.execute_script("return document.documentElement.clientWidth")
    assert banner.rect["width"] >= width - 2  # full width
    browser.find_element(By.CSS_SELECTOR, 'button[data-control="clear_stop"]').click()
    wait_for(lambda: not banner.is_displayed(), what="the banner to go")
    wait_for(lambda: badge.text == "policy", what="the policy badge")


def test_a_click_then_space_and_enter_adds_no_mark(demo, browser) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    open_page(browser, demo.url)
    hub = demo.setup.hub
    browser.find_element(By.CSS_SELECTOR, 'button[data-control="mark_success"]').click()
    wait_for(lambda: stats(browser)["acks"] == 1, what="the mark's confirmation")
    assert "marked success" in browser.find_element(By.ID, "toast").text
    focused = browser.execute_script("return document.activeElement.tagName")
    assert focused == "BODY"  # the button did not keep the focus
    ActionChains(browser).send_keys(Keys.SPACE).send_keys(Keys.ENTER).perform()
    ActionChains(browser).send_keys(Keys.SPACE).send_keys(Keys.RETURN).perform()
    browser.find_element(By.TAG_NAME, "body").send_keys("u")  # a sentinel after the keys
    wait_for(lambda: stats(browser)["acks"] == 2, what="the sentinel's ack")
    assert stats(browser)["controlsSent"] == ["mark_success", "resume"]
    assert [m["mark"] for m in hub.marks] == ["mark_success"]
    assert stats(browser)["errors"] == 0
    browser.find_element(By.TAG_NAME, "body").send_keys("z")  # undo, within its window
    wait_for(lambda: stats(browser)["acks"] == 3, what="the undo's ack")
    assert "withdrawn" in browser.find_element(By.ID, "toast").text
    assert hub.snapshot()["marks"] == 0 and hub.marks[-1]["undone"]


def test_backspace_resets_only_when_pressed_twice_and_the_key_map_is_shown(demo, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    open_page(browser, demo.url)
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.BACKSPACE)
    assert "press Backspace" in browser.find_element(By.ID, "toast").text
    body.send_keys("u")  # a sentinel: once acked, anything sent before it has arrived
    wait_for(lambda: stats(browser)["acks"] == 1, what="the sentinel's ack")
    assert stats(browser)["controlsSent"] == ["resume"]  # one Backspace sent nothing
    episodes = demo.episodes
    body.send_keys(Keys.BACKSPACE)
    body.send_keys(Keys.BACKSPACE)
    wait_for(lambda: demo.episodes > episodes, what="the reset episode")
    assert stats(browser)["controlsSent"] == ["resume", "reset"]
    rows = browser.find_elements(By.CSS_SELECTOR, "#keymap tr")
    text = "\n".join(row.text for row in rows)
    assert "Esc software stop" in text and "Backspace x2 reset" in text
    assert "W teleop +x (hold)" in text and "C teleop close (hold)" in text


def test_both_cameras_stay_on_the_page(demo, browser) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, demo.url)
    wait_for(lambda: len(stats(browser).get("frameAgeMs", {})) == 2, what="both cameras")
    browser.execute_script(  # count removed camera views; keep the first image elements
        "window.removed = 0;"
        "window.firstImages = [...document.querySelectorAll('#cameras canvas')];"
        "new MutationObserver((m) => m.forEach((r) => window.removed += r.removedNodes.length))"
        ".observe(document.getElementById('cameras'), {childList: true});"
    )
    frames = stats(browser)["frames"]
    wait_for(lambda: stats(browser)["frames"] >= frames + 30, what="30 frames")
    figures = browser.find_elements(By.CSS_SELECTOR, "#cameras figure")
    assert [f.find_element(By.TAG_NAME, "canvas").get_attribute("id") for f in figures] == [
        "cam-front",
        "cam-wrist",
    ]
    assert browser.execute_script("return window.removed") == 0  # no view was rebuilt
    assert browser.execute_script(
        "return window.firstImages.every((img, i) => img === document.querySelectorAll("
        "'#cameras canvas')[i] && img.isConnected)"
    )  # the very same image elements, still on the page
    for camera in ("front", "wrist"):
        image = browser.find_element(By.ID, f"cam-{camera}")
        assert image.is_displayed() and int(image.get_attribute("data-seq")) > 0


def test_a_disconnected_page_says_so_and_stop_says_it_was_not_sent(bare, browser) -> None:
    from selenium.webdriver.common.by import By

    server, _, _ = bare
    open_page(browser, server.url)
    server.stop()
    banner = browser.find_element(By.ID, "banner")
    wait_for(lambda: banner.is_displayed() and "DISCONNECTED" in banner.text, what="banner")
    assert "hardware stop" in banner.text
    assert "disconnected" in browser.find_element(By.TAG_NAME, "body").get_attribute("class")
    assert browser.find_element(By.ID, "control").text == "DISCONNECTED"
    wait_for(lambda: "retrying in" in browser.find_element(By.ID, "connection").text,
             what="the retry notice")  # fmt: skip
    browser.find_element(By.CSS_SELECTOR, 'button[data-control="stop"]').click()
    assert "NOT SENT (stop)" in browser.find_element(By.ID, "toast").text


def test_at_800x600_stop_and_the_control_state_stay_on_screen(demo, browser) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, demo.url, 800, 600)
    assert browser.execute_script("return [innerWidth, innerHeight]") == [800, 600]

    def inside(element_id: str | None, css: str | None = None) -> bool:
        element = (
            browser.find_element(By.CSS_SELECTOR, css)
            if css
            else browser.find_element(By.ID, element_id)
        )
        rect = browser.execute_script(
            "const r = arguments[0].getBoundingClientRect();"
            "return [r.left, r.top, r.right, r.bottom]",
            element,
        )
        return rect[0] >= 0 and rect[1] >= 0 and rect[2] <= 800 and rect[3] <= 600

    for scroll in (0, 10_000):  # before and after scrolling the panels to the bottom
        browser.execute_script(f"document.querySelector('main').scrollTop = {scroll}")
        assert inside(None, 'button[data-control="stop"]')
        assert inside("control") and inside("mode")
        for name in ("take_over", "hand_back", "mark_success", "pause", "clear_stop"):
            assert inside(None, f'button[data-control="{name}"]'), name


def test_the_twin_shows_its_mode_loop_and_warnings_and_stays_live_while_paused(
    demo, browser
) -> None:
    import logging

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    open_page(browser, demo.url)
    mode = browser.find_element(By.ID, "mode")
    wait_for(lambda: mode.text == "robot active", what="the twin's mode")
    loop = browser.find_element(By.ID, "h_loop")
    wait_for(lambda: "lockstep" in loop.text and "ok" in loop.get_attribute("class"),
             what="the loop rate")  # fmt: skip
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("p")  # the actor loop holds: only the status forwarder reports now
    wait_for(lambda: demo.setup.bridge.paused and demo.setup.bridge.holds >= 2, what="holding")
    steps = demo.steps
    logging.getLogger("robot_rl.controllers.loop").warning("joint 4 close to its limit")
    warnings = browser.find_element(By.ID, "warnings")
    wait_for(lambda: "joint 4 close to its limit" in warnings.text, what="the warning")
    body.send_keys(Keys.ESCAPE)  # the operator's software stop, with the loop paused
    wait_for(lambda: mode.text == "robot stopped", what="the stopped mode")
    assert "stopped" in browser.find_element(By.ID, "watchdog").text
    assert "SOFTWARE STOP" in browser.find_element(By.ID, "banner").text
    assert demo.steps == steps  # all of it arrived while the policy loop did not step
    browser.find_element(By.CSS_SELECTOR, 'button[data-control="clear_stop"]').click()
    wait_for(lambda: mode.text == "robot active", what="the mode after clearing the stop")


def test_a_robot_fault_fills_the_banner_and_the_badge_agrees(bare, browser) -> None:
    from selenium.webdriver.common.by import By

    from robot_rl.console.robot_status import robot_fields

    server, hub, _ = bare
    open_page(browser, server.url)
    hub.update(**robot_fields({"mode": 0, "loop_hz": 998.0, "loop_hz_target": 1000.0}))
    loop = browser.find_element(By.ID, "h_loop")
    wait_for(lambda: "998 Hz of 1000 Hz" in loop.text, what="the loop rate")
    hub.update(**robot_fields({"mode": 0, "loop_hz": 700.0, "loop_hz_target": 1000.0}))
    wait_for(lambda: "bad" in loop.get_attribute("class"), what="a slow loop marked bad")
    hub.update(**robot_fields({"mode": 3, "fault_text": "reflex: joint 4 torque limit",
                               "connected": True, "loop_hz": 0.0}))  # fmt: skip
    banner = browser.find_element(By.ID, "banner")
    wait_for(lambda: "ROBOT FAULT: reflex: joint 4 torque limit" in banner.text, what="fault")
    assert browser.find_element(By.ID, "control").text.startswith("FAULT")
    assert "robot fault: reflex" in browser.find_element(By.ID, "warnings").text
