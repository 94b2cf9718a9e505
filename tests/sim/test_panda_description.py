"""Tests for sim.panda_description: the Panda URDF checked against the published parameters.

The expected values below are typed in from the sources (Franka's FCI documentation and
datasheet, the tables of Gaz et al., IEEE RA-L 2019, and the Franka Hand figures listed in
sim/assets/panda/README.md). They are deliberately not read from the URDF, so the tests check
the file: an independent numpy model built from these numbers must reproduce PyBullet's
kinematics, gravity torques and mass matrix.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from math import pi
from pathlib import Path

import numpy as np
import pybullet as pb
import pybullet_data
import pytest
from robot_rl.sim.panda_description import (
    PANDA_LINK_MASSES_KG,
    PANDA_URDF_TEMPLATE,
    panda_urdf_path,
)

G0 = 9.81  # m/s^2, the gravity the twin uses

# Franka's modified DH table (Craig convention): (a_{i-1}, d_i, alpha_{i-1}) for joints 1..7.
DH = [
    (0.0, 0.333, 0.0),
    (0.0, 0.0, -pi / 2),
    (0.0, 0.316, pi / 2),
    (0.0825, 0.0, pi / 2),
    (-0.0825, 0.384, -pi / 2),
    (0.0, 0.0, pi / 2),
    (0.088, 0.0, pi / 2),
]
FLANGE_D = 0.107  # flange along z of link 7
HAND_YAW = -pi / 4  # the hand sits on the flange turned by -45 degrees about z
FINGER_Z = 0.0584  # finger joints along z of the hand frame
TCP_Z = 0.1034  # Franka's flange-to-TCP offset for the Franka Hand

# Franka datasheet (FCI "limits for Panda").
Q_MIN = [-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]
Q_MAX = [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]
QD_MAX = [2.1750, 2.1750, 2.1750, 2.1750, 2.6100, 2.6100, 2.6100]
TAU_MAX = [87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0]
# Franka Hand: 80 mm stroke (0.04 m per finger), 70 N continuous force, 0.05 m/s per finger.
FINGER_STROKE = 0.04
FINGER_FORCE = 70.0
FINGER_SPEED = 0.05

# Gaz et al. 2019, identified feasible parameters of links 1..7: mass (kg), centre of mass in
# the link frame (m), inertia about the centre of mass with axes parallel to the link frame,
# in the paper's order (xx, xy, xz, yy, yz, zz) (kg m^2).
GAZ = {
    "panda_link1": (
        4.970684,
        (3.875e-03, 2.081e-03, 0.0),
        (7.0337e-01, -1.3900e-04, 6.7720e-03, 7.0661e-01, 1.9169e-02, 9.1170e-03),
    ),
    "panda_link2": (
        0.646926,
        (-3.141e-03, -2.872e-02, 3.495e-03),
        (7.9620e-03, -3.9250e-03, 1.0254e-02, 2.8110e-02, 7.0400e-04, 2.5995e-02),
    ),
    "panda_link3": (
        3.228604,
        (2.7518e-02, 3.9252e-02, -6.6502e-02),
        (3.7242e-02, -4.7610e-03, -1.1396e-02, 3.6155e-02, -1.2805e-02, 1.0830e-02),
    ),
    "panda_link4": (
        3.587895,
        (-5.317e-02, 1.04419e-01, 2.7454e-02),
        (2.5853e-02, 7.7960e-03, -1.3320e-03, 1.9552e-02, 8.6410e-03, 2.8323e-02),
    ),
    "panda_link5": (
        1.225946,
        (-1.1953e-02, 4.1065e-02, -3.8437e-02),
        (3.5549e-02, -2.1170e-03, -4.0370e-03, 2.9474e-02, 2.2900e-04, 8.6270e-03),
    ),
    "panda_link6": (
        1.666555,
        (6.0149e-02, -1.4117e-02, -1.0517e-02),
        (1.9640e-03, 1.0900e-04, -1.1580e-03, 4.3540e-03, 3.4100e-04, 5.4330e-03),
    ),
    "panda_link7": (
        0.735522,
        (1.0517e-02, -4.252e-03, 6.1597e-02),
        (1.2516e-02, -4.2800e-04, -1.1960e-03, 1.0027e-02, -7.4100e-04, 4.8150e-03),
    ),
}
# Franka Hand (hand body = 0.73 kg total minus the two fingers) and the finger estimates.
HAND = (0.70, (-0.01, 0.0, 0.03), (1.0e-03, 0.0, 0.0, 2.5e-03, 0.0, 1.7e-03))
LEFT_FINGER = (
    0.015,
    (0.0, 0.01196, 0.02378),
    (3.906e-06, 0.0, 0.0, 3.730e-06, 4.685e-07, 1.146e-06),
)
RIGHT_FINGER = (
    0.015,
    (0.0, -0.01196, 0.02378),
    (3.906e-06, 0.0, 0.0, 3.730e-06, -4.685e-07, 1.146e-06),
)
BASE_MASS = 1.94  # estimate: ~18 kg datasheet arm mass minus links 1..7

# (joint name, PyBullet joint type, child link) in PyBullet's joint order.
JOINTS = [
    *[(f"panda_joint{i}", pb.JOINT_REVOLUTE, f"panda_link{i}") for i in range(1, 8)],
    ("panda_joint8", pb.JOINT_FIXED, "panda_link8"),
    ("panda_hand_joint", pb.JOINT_FIXED, "panda_hand"),
    ("panda_finger_joint1", pb.JOINT_PRISMATIC, "panda_leftfinger"),
    ("panda_finger_joint2", pb.JOINT_PRISMATIC, "panda_rightfinger"),
    ("panda_grasptarget_hand", pb.JOINT_FIXED, "panda_grasptarget"),
]
N_DOF = 9  # 7 arm joints + 2 fingers


# --- independent numpy model -------------------------------------------------------------------


def _tensor(six: tuple[float, ...]) -> np.ndarray:
    xx, xy, xz, yy, yz, zz = six
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def _rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _homogeneous(rot: np.ndarray, pos: tuple[float, float, float]) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = pos
    return out


def _mdh(a: float, d: float, alpha: float, theta: float) -> np.ndarray:
    """Modified DH: Rot_x(alpha) Trans_x(a) Rot_z(theta) Trans_z(d)."""
    return (
        _homogeneous(_rot_x(alpha), (0.0, 0.0, 0.0))
        @ _homogeneous(np.eye(3), (a, 0.0, 0.0))
        @ _homogeneous(_rot_z(theta), (0.0, 0.0, 0.0))
        @ _homogeneous(np.eye(3), (0.0, 0.0, d))
    )


def forward_kinematics(q: np.ndarray) -> dict[str, np.ndarray]:
    """World transforms of every link frame; q = 7 arm joints then the two finger joints."""
    frames: dict[str, np.ndarray] = {"panda_link0": np.eye(4)}
    pose = np.eye(4)
    for i, (a, d, alpha) in enumerate(DH):
        pose = pose @ _mdh(a, d, alpha, q[i])
        frames[f"panda_link{i + 1}"] = pose
    flange = pose @ _homogeneous(np.eye(3), (0.0, 0.0, FLANGE_D))
    hand = flange @ _homogeneous(_rot_z(HAND_YAW), (0.0, 0.0, 0.0))
    frames["panda_link8"] = flange
    frames["panda_hand"] = hand
    frames["panda_leftfinger"] = hand @ _homogeneous(np.eye(3), (0.0, q[7], FINGER_Z))
    frames["panda_rightfinger"] = hand @ _homogeneous(np.eye(3), (0.0, -q[8], FINGER_Z))
    frames["panda_grasptarget"] = hand @ _homogeneous(np.eye(3), (0.0, 0.0, TCP_Z))
    return frames


def _bodies(drop_off_diagonal: bool = False) -> list[tuple[str, float, np.ndarray, np.ndarray]]:
    """(link, mass, centre of mass in the link frame, inertia about it) of every moving body."""
    table = {**GAZ, "panda_hand": HAND, "panda_leftfinger": LEFT_FINGER}
    table["panda_rightfinger"] = RIGHT_FINGER
    out = []
    for name, (mass, com, six) in table.items():
        inertia = _tensor(six)
        if drop_off_diagonal:
            inertia = np.diag(np.diag(inertia))
        out.append((name, mass, np.array(com), inertia))
    return out


def _jacobians(
    frames: dict[str, np.ndarray], link: str, point: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Linear and angular Jacobians (3 x 9) of a point fixed to ``link``."""
    jv = np.zeros((3, N_DOF))
    jw = np.zeros((3, N_DOF))
    arm_index = int(link[-1]) if link.startswith("panda_link") else 7
    for j in range(arm_index):
        axis = frames[f"panda_link{j + 1}"][:3, 2]
        origin = frames[f"panda_link{j + 1}"][:3, 3]
        jv[:, j] = np.cross(axis, point - origin)
        jw[:, j] = axis
    hand_y = frames["panda_hand"][:3, 1]
    if link == "panda_leftfinger":
        jv[:, 7] = hand_y
    elif link == "panda_rightfinger":
        jv[:, 8] = -hand_y
    return jv, jw


def model_gravity_and_mass(
    q: np.ndarray, drop_off_diagonal: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """g(q) = sum J_v^T m g0 e_z and M(q) = sum J_v^T m J_v + J_w^T R I R^T J_w."""
    frames = forward_kinematics(q)
    gravity = np.zeros(N_DOF)
    mass_matrix = np.zeros((N_DOF, N_DOF))
    for link, mass, com, inertia in _bodies(drop_off_diagonal):
        rot, pos = frames[link][:3, :3], frames[link][:3, 3]
        com_world = pos + rot @ com
        jv, jw = _jacobians(frames, link, com_world)
        gravity += jv.T @ (mass * G0 * np.array([0.0, 0.0, 1.0]))
        mass_matrix += mass * jv.T @ jv + jw.T @ (rot @ inertia @ rot.T) @ jw
    return gravity, mass_matrix


def random_configurations(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arm = rng.uniform(Q_MIN, Q_MAX, size=(count, 7))
    fingers = rng.uniform(0.0, FINGER_STROKE, size=(count, 2))
    return np.hstack([arm, fingers])


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def urdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return panda_urdf_path(tmp_path_factory.mktemp("assets"))


@pytest.fixture(scope="module")
def sim(urdf: Path):
    client = pb.connect(pb.DIRECT)
    pb.setGravity(0.0, 0.0, -G0, physicsClientId=client)
    body = pb.loadURDF(
        str(urdf),
        useFixedBase=True,
        flags=pb.URDF_USE_INERTIA_FROM_FILE,
        physicsClientId=client,
    )
    yield client, body
    pb.disconnect(client)


def _set_q(client: int, body: int, q: np.ndarray) -> None:
    movable = [
        j
        for j in range(pb.getNumJoints(body, physicsClientId=client))
        if pb.getJointInfo(body, j, physicsClientId=client)[2] != pb.JOINT_FIXED
    ]
    for j, value in zip(movable, q, strict=True):
        pb.resetJointState(body, j, float(value), physicsClientId=client)


# --- tests -------------------------------------------------------------------------------------


def test_joint_names_order_and_datasheet_limits(sim) -> None:
    client, body = sim
    assert pb.getNumJoints(body, physicsClientId=client) == len(JOINTS)
    for index, (name, joint_type, child) in enumerate(JOINTS):
        info = pb.getJointInfo(body, index, physicsClientId=client)
        assert info[1].decode() == name
        assert info[2] == joint_type
        assert info[12].decode() == child
    for i in range(7):
        _, _, _, _, _, _, _, _, lower, upper, effort, velocity, *_ = pb.getJointInfo(
            body, i, physicsClientId=client
        )
        assert (lower, upper) == pytest.approx((Q_MIN[i], Q_MAX[i]), abs=1e-12)
        assert velocity == pytest.approx(QD_MAX[i], abs=1e-12)
        assert effort == pytest.approx(TAU_MAX[i], abs=1e-12)
    for i in (9, 10):
        info = pb.getJointInfo(body, i, physicsClientId=client)
        assert (info[8], info[9]) == pytest.approx((0.0, FINGER_STROKE), abs=1e-12)
        assert info[10] == pytest.approx(FINGER_FORCE, abs=1e-12)
        assert info[11] == pytest.approx(FINGER_SPEED, abs=1e-12)


def test_link_masses_and_centres_of_mass(sim, urdf: Path) -> None:
    client, body = sim
    for name, (mass, _, _) in GAZ.items():
        assert PANDA_LINK_MASSES_KG[name] == pytest.approx(mass, abs=1e-12)
    hand_total = PANDA_LINK_MASSES_KG["panda_hand"] + 2 * PANDA_LINK_MASSES_KG["panda_leftfinger"]
    assert hand_total == pytest.approx(0.73, abs=1e-12)
    assert PANDA_LINK_MASSES_KG["panda_link0"] == pytest.approx(BASE_MASS, abs=1e-12)

    expected = {**GAZ, "panda_hand": HAND, "panda_leftfinger": LEFT_FINGER}
    expected["panda_rightfinger"] = RIGHT_FINGER
    for index, (_, _, child) in enumerate(JOINTS):
        dynamics = pb.getDynamicsInfo(body, index, physicsClientId=client)
        assert dynamics[0] == pytest.approx(PANDA_LINK_MASSES_KG[child], abs=1e-12), child
        if child in expected:
            mass, com, six = expected[child]
            assert dynamics[0] == pytest.approx(mass, abs=1e-12), child
            assert dynamics[3] == pytest.approx(com, abs=1e-12), child
            principal = np.sort(np.linalg.eigvalsh(_tensor(six)))
            assert np.sort(dynamics[2]) == pytest.approx(principal, rel=1e-6), child

    # A fixed base reports mass 0, so check the base on a free-floating copy.
    free = pb.loadURDF(
        str(urdf),
        basePosition=(5.0, 0.0, 0.0),
        useFixedBase=False,
        flags=pb.URDF_USE_INERTIA_FROM_FILE,
        physicsClientId=client,
    )
    try:
        base = pb.getDynamicsInfo(free, -1, physicsClientId=client)
        assert base[0] == pytest.approx(BASE_MASS, abs=1e-12)
        total = sum(
            pb.getDynamicsInfo(free, j, physicsClientId=client)[0]
            for j in range(-1, pb.getNumJoints(free, physicsClientId=client))
        )
        assert total == pytest.approx(sum(PANDA_LINK_MASSES_KG.values()), abs=1e-9)
    finally:
        pb.removeBody(free, physicsClientId=client)


def test_inertias_in_file_are_physically_valid(urdf: Path) -> None:
    root = ET.parse(urdf).getroot()
    links = root.findall("link")
    assert {link.get("name") for link in links} == set(PANDA_LINK_MASSES_KG)
    for link in links:
        inertial = link.find("inertial")
        assert inertial is not None, f"{link.get('name')}: PyBullet would give it 1 kg"
        mass = float(inertial.find("mass").get("value"))
        attrs = inertial.find("inertia").attrib
        tensor = _tensor(tuple(float(attrs[k]) for k in ("ixx", "ixy", "ixz", "iyy", "iyz", "izz")))
        if mass == 0.0:
            assert not tensor.any(), link.get("name")
            continue
        principal = np.sort(np.linalg.eigvalsh(tensor))
        assert principal[0] > 0.0, link.get("name")
        assert principal[0] + principal[1] >= principal[2], link.get("name")


def test_kinematics_match_modified_dh(sim) -> None:
    client, body = sim
    for q in random_configurations(10, seed=1):
        _set_q(client, body, q)
        frames = forward_kinematics(q)
        for index, (_, _, child) in enumerate(JOINTS):
            state = pb.getLinkState(
                body, index, computeForwardKinematics=True, physicsClientId=client
            )
            rot = np.array(pb.getMatrixFromQuaternion(state[5])).reshape(3, 3)
            assert np.allclose(state[4], frames[child][:3, 3], atol=1e-6), child
            assert np.allclose(rot, frames[child][:3, :3], atol=1e-6), child
    # At q = 0 the flange points straight down at x = a7, and the TCP hangs 0.1034 m below it.
    _set_q(client, body, np.zeros(N_DOF))
    tcp = pb.getLinkState(body, 11, computeForwardKinematics=True, physicsClientId=client)[4]
    assert tcp == pytest.approx((0.088, 0.0, 0.333 + 0.316 + 0.384 - 0.107 - 0.1034), abs=1e-6)


def test_gravity_torques_match_published_parameters(sim) -> None:
    client, body = sim
    for q in random_configurations(10, seed=2):
        expected, _ = model_gravity_and_mass(q)
        torques = pb.calculateInverseDynamics(
            body, q.tolist(), [0.0] * N_DOF, [0.0] * N_DOF, physicsClientId=client
        )
        assert np.allclose(torques, expected, rtol=0.0, atol=1e-6), (q, torques, expected)


def test_mass_matrix_matches_published_inertia_tensors(sim) -> None:
    client, body = sim
    for q in random_configurations(8, seed=3):
        _, expected = model_gravity_and_mass(q)
        mass_matrix = np.array(pb.calculateMassMatrix(body, q.tolist(), physicsClientId=client))
        assert mass_matrix.shape == (N_DOF, N_DOF)
        assert np.allclose(mass_matrix[:7, :7], expected[:7, :7], rtol=1e-6, atol=1e-8)
        assert np.allclose(mass_matrix, expected, rtol=1e-6, atol=1e-8)
        # The comparison has teeth: without the off-diagonal products of inertia the model
        # differs from PyBullet by far more than the tolerance.
        _, diagonal_only = model_gravity_and_mass(q, drop_off_diagonal=True)
        assert np.abs(mass_matrix[:7, :7] - diagonal_only[:7, :7]).max() > 1e-3


def test_resolved_path_is_stable_and_complete(tmp_path: Path) -> None:
    first = panda_urdf_path(tmp_path)
    second = panda_urdf_path(tmp_path)
    assert first == second
    assert first.parent == tmp_path.resolve()
    text = first.read_text(encoding="utf-8")
    assert "{mesh_dir}" not in text
    meshes = [m.get("filename") for m in ET.fromstring(text).iter("mesh")]
    assert meshes
    assert all(Path(m).is_absolute() and Path(m).is_file() for m in meshes)
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary files left
    assert panda_urdf_path() == panda_urdf_path()  # default cache folder
    assert PANDA_URDF_TEMPLATE.is_file()


def test_missing_pybullet_data_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pybullet_data", None)
    with pytest.raises(FileNotFoundError, match="pip install pybullet"):
        panda_urdf_path(tmp_path)


def test_missing_meshes_are_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(pybullet_data, "getDataPath", lambda: str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"collision/link1\.obj"):
        panda_urdf_path(tmp_path / "cache")
