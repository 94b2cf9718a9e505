"""Joint impedance law: (state, model, reference, gains) -> joint torque. Pure, no clock or I/O.

tau = K (q_ref - q) + D (dq_ref - dq) + C(q, dq) dq, with D = 2 zeta sqrt(K M_ii) per joint so that
damping_ratio 1 is critical against each joint's own inertia. Gravity is left to the robot.
"""

from __future__ import annotations

import numpy as np
from robot_rl.controllers.gains import DampingGains, JointGains

from robot_rl.interfaces import RobotModel, RobotState


def joint_impedance_torque(
    state: RobotState,
    model: RobotModel,
    q_ref_rad: np.ndarray,
    dq_ref_rad_s: np.ndarray,
    gains: JointGains,
) -> np.ndarray:
    """Joint torque (7,), Nm, excluding gravity."""
    k = gains.stiffness_nm_per_rad
    d = 2.0 * gains.damping_ratio * np.sqrt(k * np.diag(model.mass_matrix))
    return k * (q_ref_rad - state.q_rad) + d * (dq_ref_rad_s - state.dq_rad_s) + model.coriolis_nm


def damping_torque(dq_rad_s: np.ndarray, gains: DampingGains) -> np.ndarray:
    """Pure joint damping (7,), Nm: brings the arm to rest without pulling it anywhere."""
    return -gains.damping_nm_s_per_rad * dq_rad_s
