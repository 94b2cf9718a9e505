"""The workspace reachability check: postures the arm can take are found reachable, points past its
reach are not, and the box's probe points are its corners, face centres and centre."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
from robot_rl.controllers.kinematics import panda_tcp_transform, rotation_to_quat_xyzw
from robot_rl.controllers.reachability import check_workspace_reach, probe_points, solve_pose
from robot_rl.controllers.reference import Workspace
from robot_rl.hardware.franka import FR3_LIMITS
from robot_rl.hardware.franka_sim import SIM_HOME_Q_RAD, SimReachBackend

from robot_rl.cli import main

HOME = np.array(SIM_HOME_Q_RAD)
MARGIN = 0.1


def test_probe_points_are_the_corners_face_centres_and_centre():
    ws = Workspace(pos_min_m=(0.3, -0.2, 0.1), pos_max_m=(0.6, 0.2, 0.5))
    points = dict(probe_points(ws))
    assert len(points) == 15
    corners = [p for name, p in points.items() if name.startswith("corner")]
    assert {tuple(c) for c in corners} == {
        (x, y, z) for x in (0.3, 0.6) for y in (-0.2, 0.2) for z in (0.1, 0.5)
    }
    np.testing.assert_allclose(points["centre"], [0.45, 0.0, 0.3])
    np.testing.assert_allclose(points["face z+"], [0.45, 0.0, 0.5])


@pytest.mark.parametrize("seed", range(4))
def test_a_pose_the_arm_can_take_is_solved(seed):
    """A random posture inside the joint limits (less the margin) gives a pose; solving for it
    from home lands on that pose, whatever posture it finds."""
    rng = np.random.default_rng(seed)
    q_min = FR3_LIMITS.joint_pos_min_rad + MARGIN
    q_max = FR3_LIMITS.joint_pos_max_rad - MARGIN
    q_true = np.clip(HOME + rng.uniform(-0.6, 0.6, 7), q_min, q_max)
    pose = panda_tcp_transform(q_true)
    q, error = solve_pose(pose[:3, 3], rotation_to_quat_xyzw(pose[:3, :3]), HOME, q_min, q_max)
    assert np.linalg.norm(error[:3]) < 1e-4 and np.linalg.norm(error[3:]) < 1e-3
    assert (q >= q_min).all() and (q <= q_max).all()
    np.testing.assert_allclose(panda_tcp_transform(q)[:3, 3], pose[:3, 3], atol=1e-4)


def test_a_point_past_the_arms_reach_is_out_of_reach_by_at_least_the_gap():
    # Shoulder at z = 0.333; the Panda/FR3 reaches under 0.95 m from it (0.316 + 0.384 + 0.0825 x
    # 2 + the 0.21 m flange and hand); a point 1.5 m out is at least 0.5 m beyond.
    ws = Workspace(pos_min_m=(1.45, -0.05, 0.3), pos_max_m=(1.5, 0.05, 0.35))
    results = check_workspace_reach(ws, FR3_LIMITS, HOME, starts=2)
    assert not any(r.reachable for r in results)
    assert min(r.position_error_m for r in results) > 0.45
    assert all("out of reach" in r.line() and "mm short" in r.line() for r in results)


def test_the_franky_sim_reach_box_reaches_past_the_arm_at_its_far_top_corners():
    """The box where a streamed corner once made torque mode thrash (0.7, +-0.15, 0.6): those two
    corners are out of reach with the gripper down; every other probe point is reachable."""
    results = check_workspace_reach(SimReachBackend.workspace, FR3_LIMITS, HOME)
    out = {r.pos_m for r in results if not r.reachable}
    assert out == {(0.7, -0.15, 0.6), (0.7, 0.15, 0.6)}
    goal_high = np.array(SimReachBackend.goal_high_m)  # the task's goals stay within reach
    goal_box = Workspace(pos_min_m=tuple(goal_high - 0.01), pos_max_m=tuple(goal_high))
    assert all(r.reachable for r in check_workspace_reach(goal_box, FR3_LIMITS, HOME))


def test_check_workspace_names_the_points_out_of_reach_and_fails(capsys):
    assert main(["robot", "check-workspace", "--franka-sim"]) == 1
    out = capsys.readouterr().out
    assert out.count("FAIL  corner") == 2
    assert "2 of 15 probe points" in out and "Shrink workspace" in out


def test_check_workspace_passes_the_shipped_example_rig(capsys):
    rig = "robot_rl/configs/franka_rig_example.yaml"
    assert main(["robot", "check-workspace", "--rig", rig]) == 0
    assert "reaches all 15 probe points" in capsys.readouterr().out


def test_check_workspace_refuses_a_rig_with_an_unknown_key_in_one_line(tmp_path, caplog):
    rig = tmp_path / "rig.yaml"
    rig.write_text("franka:\n  robot_ip: 172.16.0.2\nworkspace:\n  pos_max: [0.6, 0.2, 0.4]\n")
    with caplog.at_level(logging.ERROR):
        assert main(["robot", "check-workspace", "--rig", str(rig)]) == 2
    assert "workspace.pos_max" in caplog.text


def test_doctor_checks_a_rigs_box_in_one_line_with_the_command_that_lists_every_point(tmp_path):
    from robot_rl.hardware.doctor import check_workspace_reach as doctor_check

    rig = tmp_path / "rig.yaml"
    rig.write_text(
        "franka:\n  robot_ip: 172.16.0.2\n"
        "workspace:\n  pos_min_m: [0.4, -0.15, 0.35]\n  pos_max_m: [0.7, 0.15, 0.6]\n"
    )
    check = doctor_check(rig)
    assert not check.ok
    assert "2 of 15 probe points" in check.detail and "mm short" in check.detail
    assert f"robot-rl robot check-workspace --rig {rig}" in check.line()
    assert "\n" not in check.line()
    good = doctor_check(Path("robot_rl/configs/franka_rig_example.yaml"))
    assert good.ok and "all 15 probe points" in good.detail


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"pos_max_m": (math.nan, 0.2, 0.4)}, "pos_max_m=(nan, 0.2, 0.4); allowed: 3 finite"),
        ({"pos_min_m": (0.7, -0.2, 0.1)}, "pos_min_m x=0.7 is not below pos_max_m x=0.65"),
        ({"pos_min_m": (0.3, -0.2)}, "pos_min_m=(0.3, -0.2); allowed: 3 finite"),
        ({"nominal_quat_xyzw": (1.0, 1.0, 0.0, 0.0)}, "allowed: a unit quaternion"),
        ({"rot_bound_rad": (0.7, -0.1, 1.0)}, "rot_bound_rad=[0.7, -0.1, 1.0]; allowed: >= 0"),
        ({"reject_margin_m": math.inf}, "reject_margin_m=inf; allowed: a number >= 0"),
    ],
)
def test_a_workspace_that_is_not_a_box_is_refused_in_one_line(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Workspace(**fields)


def test_a_rig_with_an_inverted_box_is_refused_by_every_command_that_loads_it(tmp_path, caplog):
    rig = tmp_path / "rig.yaml"
    rig.write_text(
        "franka:\n  robot_ip: 172.16.0.2\n"
        "workspace:\n  pos_min_m: [0.6, -0.2, 0.1]\n  pos_max_m: [0.3, 0.2, 0.4]\n"
    )
    with caplog.at_level(logging.ERROR):
        assert main(["robot", "check-workspace", "--rig", str(rig)]) == 2
        assert main(["robot-server", "--backend", "franka", "--rig", str(rig)]) == 2
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 2
    assert all("pos_min_m x=0.6 is not below pos_max_m x=0.3" in line for line in lines)


@pytest.mark.parametrize(
    ("reset", "message"),
    [
        ("  random_box_m: [.nan, 0.03, 0.02]\n", "random_box_m=(nan, 0.03, 0.02); allowed: 3"),
        ("  random_box_m: [0.03, -0.01, 0.02]\n", "allowed: 3 half-widths >= 0"),
        ("  settle_pos_m: 0\n", "settle_pos_m=0.0; allowed: a number > 0"),
        ("  timeout_s: -3\n", "timeout_s=-3.0; allowed: a number > 0"),
    ],
)
def test_a_rig_with_a_bad_reset_is_refused_in_one_line(tmp_path, caplog, reset, message):
    rig = tmp_path / "rig.yaml"
    rig.write_text("franka:\n  robot_ip: 172.16.0.2\nreset:\n" + reset)
    with caplog.at_level(logging.ERROR):
        assert main(["robot", "check-workspace", "--rig", str(rig)]) == 2
    assert message in caplog.text


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("home_q_rad: [.nan, 0, 0, -1.5, 0, 1.5, 0.7]", "home_q_rad=[nan, 0.0, 0.0, -1.5"),
        ("collision_torque_nm: [20, 20, .nan, 18, 16, 14, 12]", "collision_torque_nm=[20.0"),
        ("load_com_m: [0, .inf, 0]", "load_com_m=[0.0, inf, 0.0]; every value must be finite"),
        ("signal_timeout_s: .nan", "signal_timeout_s=nan; must be finite"),
    ],
)
def test_a_rig_with_a_non_finite_arm_setting_is_refused_in_one_line(
    tmp_path, caplog, line, message
):
    """NaN passes every range comparison (each is False), so it is refused first, by name."""
    rig = tmp_path / "rig.yaml"
    rig.write_text(f"franka:\n  robot_ip: 172.16.0.2\n  {line}\n")
    with caplog.at_level(logging.ERROR):
        assert main(["robot", "check-workspace", "--rig", str(rig)]) == 2
    assert message in caplog.text
