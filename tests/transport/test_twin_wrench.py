"""The twin's external wrench (``PandaTwin.external_wrench``, published by its robot server as
``ext_wrench``): with the fingertips pressed on the table by a known Cartesian force and held
still, the contacts balance it: the wrench the arm exerts (libfranka's sign) equals that force."""

from __future__ import annotations

import numpy as np
import pybullet
from robot_rl.sim.scene import SceneConfig, TwinScene
from robot_rl.sim.twin import PandaTwin, TwinConfig

from robot_rl.interfaces import EXT_WRENCH_META_KEY
from robot_rl.transport.robot_server import SceneBackend


def test_pressing_on_the_table_reads_the_pressing_wrench() -> None:
    twin = PandaTwin(TwinConfig())
    try:
        down = pybullet.getQuaternionFromEuler([np.pi, 0.0, 0.0])
        q = pybullet.calculateInverseKinematics(
            twin.robot_id, twin.tcp_link, [0.5, 0.0, 0.02], down, maxNumIterations=200,
            physicsClientId=twin.cid,
        )  # fmt: skip
        twin.reset(np.asarray(q[:7]), 0.0)  # fingers closed, TCP 2 cm above the table
        assert not twin.external_wrench().any()  # touching nothing
        # Push down 20 N and sideways 5 N (below friction), damped until the arm is still.
        pushed = np.array([5.0, 0.0, -20.0, 0.0, 0.0, 0.0])
        for _ in range(1500):
            state = twin.read_state()
            twin.command_torque(twin.model().jacobian.T @ pushed - 10.0 * state.dq_rad_s)
            twin.step()
        assert np.abs(twin.read_state().dq_rad_s).max() < 0.01  # near static: contacts balance it
        wrench = twin.external_wrench()
        np.testing.assert_allclose(wrench[:3], pushed[:3], atol=0.2)  # N
        assert np.abs(wrench[3:]).max() < 0.1  # Nm: the pushing wrench has no torque
    finally:
        twin.close()


def test_the_twins_robot_server_backend_publishes_a_finite_wrench() -> None:
    scene = TwinScene(SceneConfig(task="reach", cameras=()))
    try:
        status = SceneBackend(scene).status()
        assert len(status[EXT_WRENCH_META_KEY]) == 6
        assert np.isfinite(status[EXT_WRENCH_META_KEY]).all()
    finally:
        scene.close()
