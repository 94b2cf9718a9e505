"""Teleop: axis shaping, the intervention gate's hysteresis, the keyboard, SpaceMouse and gamepad
drivers on fake device layers, and the operator driving the twin through the intervener."""

from __future__ import annotations

import struct
import time
from types import SimpleNamespace

import numpy as np
import pytest

from robot_rl.teleop.gate import InterventionGate
from robot_rl.teleop.keyboard import KeyboardTeleop
from robot_rl.teleop_command import (
    DeviceNotFoundError,
    TeleopCommand,
    TeleopConfig,
    command_from_axes,
    shape_axes,
)

pytestmark = pytest.mark.timeout(120)


def test_deadzone_is_continuous_and_mapping_permutes_and_signs() -> None:
    cfg = TeleopConfig(deadzone=0.2, axis_map=(1, 0, 2, 3, 4, 5), axis_sign=(1, -1, 1, 1, 1, 1),
                       scale=(0.5, 1, 1, 1, 1, 1))  # fmt: skip
    assert not shape_axes(np.full(6, 0.19), cfg).any()  # inside the deadzone: nothing
    just_out = shape_axes(np.array([0.0, 0.21, 0, 0, 0, 0]), cfg)
    assert 0 < just_out[0] < 0.01  # no jump at the edge
    full = shape_axes(np.array([1.0, 1.0, -1.0, 0, 0, 0]), cfg)
    np.testing.assert_allclose(full[:3], [0.5, -1.0, -1.0])  # x<-raw y (scaled), y<-(-raw x)
    with pytest.raises(ValueError, match="6 finite"):
        shape_axes(np.array([np.nan, 0, 0, 0, 0, 0]), cfg)
    with pytest.raises(ValueError, match="permutation"):
        TeleopConfig(axis_map=(0, 0, 1, 2, 3, 4))
    with pytest.raises(ValueError, match="device"):
        TeleopConfig(device="joystick9000")


def cmd(engaged: bool) -> TeleopCommand:
    twist = np.array([0.5, 0, 0, 0, 0, 0]) if engaged else np.zeros(6)
    return TeleopCommand(twist, None, engaged)


def test_gate_engages_on_input_holds_through_pauses_and_hands_back() -> None:
    gate = InterventionGate(hold_s=0.5)
    assert not gate.update(cmd(False), 0.0)
    assert gate.update(cmd(True), 0.1)  # input past the deadzone takes over at once
    assert gate.update(cmd(False), 0.4)  # a pause shorter than hold_s keeps control
    assert gate.update(cmd(True), 0.5)
    assert gate.update(cmd(False), 0.9)
    assert not gate.update(cmd(False), 1.01)  # 0.51 s without input: back to the policy


def test_console_take_over_is_sticky_and_hand_back_needs_a_release() -> None:
    gate = InterventionGate(hold_s=0.2)
    assert gate.update(cmd(False), 0.0, "take")
    assert gate.update(cmd(False), 5.0)  # forced: no input needed
    assert not gate.update(cmd(True), 5.1, "release")  # released while the stick is held
    assert not gate.update(cmd(True), 5.2)  # still held: does not grab control back
    assert not gate.update(cmd(False), 5.3)
    assert gate.update(cmd(True), 5.4)  # a fresh push engages again


def test_keyboard_keys_drive_axes_and_gripper() -> None:
    kb = KeyboardTeleop(TeleopConfig(device="keyboard"))
    assert not kb.read().engaged
    kb.press("W")
    kb.press("r")
    kb.press("c")
    command = kb.read()
    np.testing.assert_allclose(command.twist[:3], [1.0, 0.0, 1.0])
    assert command.gripper == "close" and command.engaged
    kb.release("w")
    kb.release("r")
    kb.release("c")
    assert not kb.read().engaged
    with pytest.raises(ValueError, match="actions are"):
        KeyboardTeleop(TeleopConfig(device="keyboard", keys={"x": "+warp"}))


# -- SpaceMouse on a fake hidapi ------------------------------------------------------------------
class FakeHidDevice:
    def __init__(self, reports: list[bytes]) -> None:
        self.reports, self.closed, self.unplugged = list(reports), False, False

    def open_path(self, path: bytes) -> None:
        if path == b"denied":
            raise OSError("open failed")

    def read(self, size: int, timeout_ms: int) -> list[int]:
        if self.unplugged:
            raise OSError("read error")
        time.sleep(0.002)
        return list(self.reports.pop(0)) if self.reports else []

    def close(self) -> None:
        self.closed = True


def fake_hid(devices: list[dict], reports: list[bytes]) -> SimpleNamespace:
    device = FakeHidDevice(reports)
    return SimpleNamespace(enumerate=lambda: devices, device=lambda: device, the_device=device)


SM = {"vendor_id": 0x256F, "product_id": 0xC635, "path": b"/dev/hidraw3", "serial_number": "A1"}


def test_spacemouse_reports_become_commands_and_unplugging_is_clear() -> None:
    from robot_rl.hardware.spacemouse import FULL_SCALE, SpaceMouse

    push_away = struct.pack("<B6h", 1, 0, -350, 0, 0, 0, 0)  # puck y toward the user, negative
    buttons = struct.pack("<BI", 3, 0b01)
    hid = fake_hid([SM, {"vendor_id": 0x1234, "product_id": 1, "path": b"x"}], [push_away, buttons])
    mouse = SpaceMouse(TeleopConfig(device="spacemouse", deadzone=0.05), hid_module=hid)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and mouse.read().gripper != "close":
        time.sleep(0.01)
    command = mouse.read()
    assert command.engaged and command.gripper == "close"
    assert command.twist[0] == pytest.approx(1.0)  # pushed away: +x in the base frame
    assert FULL_SCALE == 350.0
    hid.the_device.unplugged = True
    time.sleep(0.1)
    with pytest.raises(DeviceNotFoundError, match="unplugged"):
        mouse.read()
    mouse.close()


def test_spacemouse_missing_ambiguous_or_denied_devices_say_what_to_do() -> None:
    from robot_rl.hardware.spacemouse import SpaceMouse

    with pytest.raises(DeviceNotFoundError, match="plug it in"):
        SpaceMouse(hid_module=fake_hid([], []))
    two = [SM, {**SM, "path": b"/dev/hidraw4", "serial_number": "B2"}]
    with pytest.raises(DeviceNotFoundError, match=r"teleop\.select"):
        SpaceMouse(hid_module=fake_hid(two, []))
    chosen = SpaceMouse(TeleopConfig(device="spacemouse", select="B2"), fake_hid(two, []))
    chosen.close()
    with pytest.raises(DeviceNotFoundError, match="udev"):
        SpaceMouse(hid_module=fake_hid([{**SM, "path": b"denied"}], []))


# -- gamepad on a fake evdev ----------------------------------------------------------------------
class FakePad:
    def __init__(self, events: list[tuple[int, int, int]], path: str = "/dev/input/event5") -> None:
        info = SimpleNamespace(min=-32768, max=32767)
        self.path, self.name, self.events = path, "Fake Pad", events
        self._caps = {0x03: [(0x00, info), (0x01, info), (0x03, info), (0x04, info)]}

    def capabilities(self) -> dict:
        return self._caps

    def read_loop(self):
        for kind, code, value in self.events:
            yield SimpleNamespace(type=kind, code=code, value=value)
        while True:
            time.sleep(0.01)
            yield SimpleNamespace(type=0, code=0, value=0)

    def close(self) -> None:
        pass


def test_gamepad_sticks_and_buttons_become_commands() -> None:
    from robot_rl.hardware.gamepad import Gamepad

    events = [(0x03, 0x01, -32768), (0x01, 0x130, 1)]  # left stick fully up, south button
    pad = FakePad(events)
    evdev = SimpleNamespace(list_devices=lambda: ["p"], InputDevice=lambda path: pad)
    gamepad = Gamepad(TeleopConfig(device="gamepad", deadzone=0.15), evdev_module=evdev)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and not gamepad.read().engaged:
        time.sleep(0.01)
    command = gamepad.read()
    assert command.twist[0] == pytest.approx(1.0) and command.gripper == "close"
    gamepad.close()
    nothing = SimpleNamespace(list_devices=lambda: [], InputDevice=None)
    with pytest.raises(DeviceNotFoundError, match="input group"):
        Gamepad(evdev_module=nothing)


def test_command_from_axes_reports_buttons_and_gripper() -> None:
    cfg = TeleopConfig()
    command = command_from_axes(np.zeros(6), (False, True), cfg, 1.0)
    assert command.gripper == "open" and command.engaged and command.buttons == (False, True)


# -- the operator drives the twin -----------------------------------------------------------------
class ScriptedDevice:
    def __init__(self) -> None:
        self.command = TeleopCommand.idle()

    def read(self) -> TeleopCommand:
        return self.command

    def close(self) -> None:
        pass


def test_the_operator_takes_over_moves_the_arm_and_hands_back() -> None:
    from robot_rl.envs.intervention import InterventionWrapper
    from robot_rl.envs.twin_env import TwinEnv, TwinEnvConfig
    from robot_rl.teleop.intervener import TeleopIntervener

    now = [0.0]
    device = ScriptedDevice()
    cfg = TeleopConfig(device="console", hold_s=0.3)
    intervener = TeleopIntervener(device, cfg, clock=lambda: now[0])
    env = InterventionWrapper(TwinEnv(TwinEnvConfig(task="reach", obs="state")), intervener)
    env.reset(seed=0)
    start = env.unwrapped.scene.state().ee_pos_m.copy()
    policy = np.zeros(4, np.float32)
    *_, info = env.step(policy)
    assert not info["intervened"]
    device.command = TeleopCommand(np.array([1.0, 0, 0, 0, 0, 0]), "close", True)
    for _ in range(5):
        now[0] += 0.1
        *_, info = env.step(policy)
        assert info["intervened"] and info["action"][0] > 0 and info["action"][-1] == -1.0
    moved = env.unwrapped.scene.state().ee_pos_m - start
    assert moved[0] > 0.02 and abs(moved[1]) < 0.01  # +x at the operator's speed
    device.command = TeleopCommand.idle()
    now[0] += 0.1
    assert env.step(policy)[4]["intervened"]  # held: a pause keeps control
    now[0] += 0.3
    assert not env.step(policy)[4]["intervened"]  # hold_s passed: the policy again
    intervener.request("take")
    assert env.step(policy)[4]["intervened"]  # the console's take-over, no input needed
    env.close()


def test_teleop_recording_keeps_only_successful_episodes(tmp_path) -> None:
    """An operator who drives to the goal on even attempts and gives up (marks failure) on odd
    ones: only the successes are kept, every step flagged as the operator's."""
    from robot_rl.console.hub import ConsoleHub
    from robot_rl.data.episodes import load_episodes
    from robot_rl.envs.twin_env import TwinEnv, TwinEnvConfig
    from robot_rl.runtime.record import record_teleop_demos

    env = TwinEnv(TwinEnvConfig(task="reach", obs="state", max_episode_steps=60))
    hub = ConsoleHub()
    attempt = {"n": 0, "steps": 0}

    class ToGoal:
        """Pushes toward the reach goal (the expert's target) at full speed."""

        def read(self) -> TeleopCommand:
            attempt["steps"] += 1
            if attempt["n"] % 2 == 1 and attempt["steps"] == 3:
                hub.control("mark_failure")
            expert = env.task.expert().act(env.scene.twin)
            error = expert.target.pos_m - env.scene.state().ee_pos_m
            twist = np.zeros(6)
            twist[:3] = np.clip(error / 0.01, -1, 1)
            return TeleopCommand(twist, None, True)

        def close(self) -> None:
            pass

    original_reset = env.reset

    def counting_reset(**kwargs):
        attempt["n"] += 1
        attempt["steps"] = 0
        return original_reset(**kwargs)

    env.reset = counting_reset
    cfg = TeleopConfig(device="console", max_linear_m_s=0.3)
    paths = record_teleop_demos(env, ToGoal(), cfg, 2, tmp_path, hub=hub, pace=False,
                                max_attempts=6)  # fmt: skip
    assert len(paths) == 2 and attempt["n"] >= 3  # a failed attempt in between was dropped
    for episode in load_episodes(tmp_path):
        assert episode.meta["source"] == "teleop" and episode.transitions[-1].terminated
        assert all(t.intervened for t in episode.transitions)
    assert hub.snapshot()["episodes_done"] >= 3
    env.close()
