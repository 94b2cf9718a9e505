"""The Cartesian law's integral term: bounded, leaky, conditional, reset whenever the loop is not
tracking; on the twin with a wrong gravity model it removes the static sag the spring leaves."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from robot_rl.controllers.integral import IntegralConfig, PositionIntegrator
from robot_rl.controllers.loop import ControlLoop, LoopConfig
from robot_rl.controllers.targets import CartesianTarget
from robot_rl.controllers.watchdog import ControlMode

PERIOD_S = 0.001


def run(integrator: PositionIntegrator, error_m: np.ndarray, seconds: float) -> np.ndarray:
    for _ in range(round(seconds / PERIOD_S)):
        integrator.update(error_m)
    return integrator.force_n.copy()


def test_a_constant_error_builds_the_force_ki_e_over_the_leak():
    config = IntegralConfig(gain_n_per_m_s=4000.0, leak_per_s=0.5, force_max_n=10.0)
    integ = PositionIntegrator(config, PERIOD_S)
    error = np.array([0.001, -0.0005, 0.0])
    # after 0.1 s (leak negligible): Ki e t = 4000 * 1 mm * 0.1 s = 0.4 N
    np.testing.assert_allclose(run(integ, error, 0.1), [0.4, -0.2, 0.0], rtol=0.03)
    # steady state: Ki e / leak = 8 N and 4 N (time constant 2 s: 20 s is 10 of them)
    np.testing.assert_allclose(run(integ, error, 20.0), [8.0, -4.0, 0.0], rtol=1e-3)
    assert IntegralConfig().leak_per_s == 0.1  # the default: a 10 s time constant


def test_the_force_is_clipped_and_does_not_wind_up_past_the_clip():
    integ = PositionIntegrator(IntegralConfig(force_max_n=10.0, leak_per_s=0.0), PERIOD_S)
    force = run(integ, np.array([0.004, -0.004, 0.0]), 5.0)  # 4000 * 4 mm * 5 s = 80 N unclipped
    np.testing.assert_allclose(force, [10.0, -10.0, 0.0])
    # the error reverses: the force leaves the clip at once (nothing stored beyond it)
    force = run(integ, np.array([-0.004, 0.004, 0.0]), 0.1)
    np.testing.assert_allclose(force, [10.0 - 1.6, -10.0 + 1.6, 0.0], rtol=1e-6)


def test_errors_outside_the_band_are_not_integrated_and_the_force_leaks_away():
    integ = PositionIntegrator(IntegralConfig(leak_per_s=0.5, error_band_m=0.005), PERIOD_S)
    run(integ, np.array([0.001, 0.0, 0.0]), 1.0)
    before = integ.force_n[0]
    after = run(integ, np.array([0.006, 0.0, -0.02]), 1.0)  # a fast move, a contact
    assert after[2] == 0.0
    assert after[0] == pytest.approx(before * math.exp(-0.5), rel=1e-3)


def test_nothing_is_integrated_while_the_reference_moves_and_the_force_fades():
    config = IntegralConfig(leak_per_s=0.0, rest_speed_m_s=0.005, moving_leak_per_s=2.0)
    integ = PositionIntegrator(config, PERIOD_S)
    error = np.array([0.001, 0.0, 0.0])
    run(integ, error, 0.5)
    learned = integ.force_n.copy()
    assert learned[0] > 1.0
    moving = np.array([0.0, 0.157, 0.0, 0.0, 0.0, 0.0])  # a 5 cm circle at 0.5 Hz
    for _ in range(500):
        integ.update(error, moving)
    # 0.5 s at 2/s: about exp(-1) of it left, though the error is still there
    np.testing.assert_allclose(integ.force_n, learned * (1 - 2.0 * PERIOD_S) ** 500, rtol=1e-9)
    learned = integ.force_n.copy()
    creeping = np.array([0.0, 0.004, 0.0, 0.5, 0.0, 0.0])  # under the rest speed (turning only)
    integ.update(error, creeping)
    assert integ.force_n[0] > learned[0]


def test_a_non_finite_error_adds_nothing_and_reset_zeroes():
    integ = PositionIntegrator(IntegralConfig(), PERIOD_S)
    run(integ, np.array([0.001, 0.001, 0.001]), 0.5)
    force = run(integ, np.array([np.nan, np.inf, 0.001]), 0.01)
    assert np.isfinite(force).all()
    integ.reset()
    np.testing.assert_array_equal(integ.force_n, np.zeros(3))


def test_a_zero_gain_turns_it_off():
    integ = PositionIntegrator(IntegralConfig(gain_n_per_m_s=0.0), PERIOD_S)
    assert not integ.enabled
    np.testing.assert_array_equal(run(integ, np.full(3, 0.001), 1.0), np.zeros(3))


@pytest.mark.parametrize(
    "name",
    [
        "gain_n_per_m_s",
        "leak_per_s",
        "force_max_n",
        "error_band_m",
        "rest_speed_m_s",
        "moving_leak_per_s",
    ],
)
@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf])
def test_bad_gains_are_refused_naming_the_field(name, value):
    with pytest.raises(ValueError, match=f"IntegralConfig.{name}="):
        IntegralConfig(**{name: value})


# -- on the twin, with a gravity model 6 N short at the TCP --------------------------------------
SAG_N = np.array([0.0, 0.0, -6.0, 0.0, 0.0, 0.0])


class SaggingTwin:
    """The twin whose gravity compensation misses a 6 N downward force at the TCP (a payload about
    0.6 kg heavier than the model), applied through the Jacobian on every torque command."""

    def __init__(self) -> None:
        from robot_rl.sim.twin import PandaTwin

        self._twin = PandaTwin()

    def __getattr__(self, name: str):
        return getattr(self._twin, name)

    def command_torque(self, tau_nm: np.ndarray) -> None:
        jac = self._twin.model().jacobian
        self._twin.command_torque(tau_nm + jac.T @ SAG_N)


@pytest.fixture(scope="module")
def sagging():
    pytest.importorskip("pybullet")
    robot = SaggingTwin()
    yield robot
    robot.close()


def settle(
    robot: SaggingTwin, config: LoopConfig, seconds: float
) -> tuple[np.ndarray, ControlLoop]:
    """Reset the twin to the ready pose, stream the pose it starts at for ``seconds`` (10 Hz);
    (mean TCP error (3,) m over the last 0.5 s, the loop)."""
    from robot_rl.controllers.loop import PANDA_READY_Q_RAD

    robot.reset(np.asarray(PANDA_READY_Q_RAD))
    loop = ControlLoop(robot, config)
    start = robot.read_state()
    goal = CartesianTarget(start.ee_pos_m.copy(), start.ee_quat_xyzw.copy())
    errors = []
    for k in range(round(seconds / 0.1)):
        loop.set_cartesian_target(goal)
        for _ in range(100):
            loop.tick()
        if (k + 1) * 0.1 > seconds - 0.5:
            errors.append(robot.read_state().ee_pos_m - goal.pos_m)
    return np.mean(errors, axis=0), loop


def test_without_the_integral_the_spring_sags_by_force_over_stiffness(sagging):
    off = dataclasses.replace(LoopConfig(), integral=IntegralConfig(gain_n_per_m_s=0.0))
    error, _ = settle(sagging, off, 1.5)
    assert error[2] == pytest.approx(-6.0 / 2000.0, abs=0.0007)  # 3 mm down


def test_the_integral_removes_the_sag_within_its_bound_and_resets_on_hold(sagging):
    error, loop = settle(sagging, LoopConfig(), 3.0)
    # was 3 mm; the leak leaves F / (K + Ki / leak) = 6 / 42000 = 0.14 mm
    assert np.abs(error).max() < 0.0003
    # it holds the missing 6 N, within its clip
    assert loop.integral_force_n[2] == pytest.approx(6.0, abs=0.3)
    assert np.abs(loop.integral_force_n).max() <= loop.config.integral.force_max_n
    # the stream stops: the watchdog holds, and the integral is dropped with it
    for _ in range(150):
        status = loop.tick()
    assert status.mode == ControlMode.HOLD
    np.testing.assert_array_equal(loop.integral_force_n, np.zeros(3))


def test_a_software_stop_drops_the_integral(sagging):
    _, loop = settle(sagging, LoopConfig(), 1.0)
    assert np.abs(loop.integral_force_n).max() > 1.0
    loop.software_stop()
    assert loop.tick().mode == ControlMode.DAMP
    np.testing.assert_array_equal(loop.integral_force_n, np.zeros(3))
