"""The Franka backend's state on franky-sim carries the external wrench (``O_F_ext_hat_K``) as
the robot server's ``ext_wrench`` meta: six finite values (franky-sim estimates none and sends
zeros; a real arm sends its estimate)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("franky")
pytest.importorskip("franky_sim")

from robot_rl.hardware.franka import FrankaConfig
from robot_rl.hardware.franka_backend import FrankaBackend
from robot_rl.hardware.franka_sim import SIM_HOME_Q_RAD, FrankySim, sim_loop_config

from robot_rl.interfaces import EXT_WRENCH_META_KEY
from robot_rl.transport.robot_server import RobotClient, RobotServer
from tests.netutil import PLAIN, loopback_endpoints

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.mark.parametrize("mode", ["torque", "tracker"])
def test_franky_sim_state_carries_a_finite_external_wrench(mode: str) -> None:
    with FrankySim() as sim:
        config = FrankaConfig(robot_ip=sim.ip, control=mode, realtime="ignore",
                              home_q_rad=SIM_HOME_Q_RAD)  # fmt: skip
        backend = FrankaBackend(config, sim_loop_config())
        backend.start()
        endpoints = loopback_endpoints()
        server = RobotServer(backend, endpoints, PLAIN)
        server.start()
        client = RobotClient(endpoints, PLAIN)
        try:
            first = client.latest(timeout_s=10.0)
            state = client.latest(timeout_s=10.0, newer_than_seq=first.seq + 5)
            wrench = np.asarray(state.meta[EXT_WRENCH_META_KEY], dtype=float)
            assert wrench.shape == (6,) and np.isfinite(wrench).all()
        finally:
            client.close()
            server.stop()
            backend.close()
