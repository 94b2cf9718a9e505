"""Target validation: every bad field raises InvalidTargetError naming the field."""

from __future__ import annotations

import math

import numpy as np
import pytest
from robot_rl.controllers.gains import CartesianGains
from robot_rl.controllers.targets import (
    QUAT_NORM_TOLERANCE,
    CartesianTarget,
    InvalidTargetError,
    JointTarget,
    validate_cartesian_target,
    validate_joint_target,
)

POS = np.array([0.5, 0.0, 0.3])
DOWN = np.array([1.0, 0.0, 0.0, 0.0])
MAX_LIN, MAX_ROT = CartesianGains.MAX_STIFFNESS
NAN, INF = math.nan, math.inf


def cartesian(**fields: object) -> CartesianTarget:
    return CartesianTarget(**{"pos_m": POS, "quat_xyzw": DOWN, **fields})


# -- Cartesian targets ---------------------------------------------------------------------------

BAD_CARTESIAN = {
    "pos-nan": (dict(pos_m=[NAN, 0.0, 0.3]), r"pos_m=.*NaN or inf"),
    "pos-inf": (dict(pos_m=[0.5, -INF, 0.3]), r"pos_m=.*NaN or inf"),
    "pos-short": (dict(pos_m=[0.5, 0.0]), r"pos_m has shape \(2,\); expected \(3,\)"),
    "pos-long": (dict(pos_m=np.zeros(4)), r"pos_m has shape \(4,\); expected \(3,\)"),
    "pos-2d": (dict(pos_m=np.zeros((3, 1))), r"pos_m has shape \(3, 1\)"),
    "pos-scalar": (dict(pos_m=0.5), r"pos_m has shape \(\)"),
    "pos-none": (dict(pos_m=None), r"pos_m"),
    "pos-string": (dict(pos_m="0.5, 0, 0.3"), r"pos_m='0.5, 0, 0.3' is not numeric"),
    "pos-words": (dict(pos_m=["x", "y", "z"]), r"pos_m=.* is not numeric"),
    "pos-complex": (dict(pos_m=[0.5j, 0.0, 0.3]), r"pos_m=.* is not numeric"),
    "pos-bool": (dict(pos_m=[True, False, True]), r"pos_m=.* is not numeric"),
    "pos-ragged": (dict(pos_m=[[0.5], [0.0, 0.3]]), r"pos_m=.* is ragged; expected 3 floats"),
    "quat-nan": (dict(quat_xyzw=[NAN, 0.0, 0.0, 1.0]), r"quat_xyzw=.*NaN or inf"),
    "quat-inf": (dict(quat_xyzw=[0.0, 0.0, 0.0, INF]), r"quat_xyzw=.*NaN or inf"),
    "quat-3": (dict(quat_xyzw=[0.0, 0.0, 1.0]), r"quat_xyzw has shape \(3,\); expected \(4,\)"),
    "quat-zero": (dict(quat_xyzw=np.zeros(4)), r"quat_xyzw=.*norm 0\.0+; a unit quaternion"),
    "quat-long": (dict(quat_xyzw=[0.0, 0.0, 0.0, 1.01]), r"quat_xyzw=.*norm 1\.01"),
    "quat-short": (dict(quat_xyzw=[0.0, 0.0, 0.0, 0.99]), r"quat_xyzw=.*norm 0\.99"),
    "quat-string": (dict(quat_xyzw="identity"), r"quat_xyzw='identity' is not numeric"),
    "twist-nan": (dict(twist=[0, 0, 0, NAN, 0, 0]), r"twist=.*NaN or inf"),
    "twist-3": (dict(twist=[0.0, 0.0, 0.0]), r"twist has shape \(3,\); expected \(6,\)"),
    "twist-string": (dict(twist="fast"), r"twist='fast' is not numeric"),
    "stiffness-nan": (dict(stiffness=[NAN, 0, 0, 0, 0, 0]), r"stiffness=.*NaN or inf"),
    "stiffness-inf": (dict(stiffness=[INF] * 6), r"stiffness=.*NaN or inf"),
    "stiffness-3": (dict(stiffness=[100.0] * 3), r"stiffness has shape \(3,\); expected \(6,\)"),
    "stiffness-negative": (
        dict(stiffness=[100.0, -1.0, 100.0, 10.0, 10.0, 10.0]),
        r"stiffness=.*out of range; allowed 0\.\.5000\.0 N/m \(linear\) and 0\.\.300\.0 Nm/rad",
    ),
    "stiffness-linear-high": (
        dict(stiffness=[MAX_LIN + 1.0, 100.0, 100.0, 10.0, 10.0, 10.0]),
        r"stiffness=.*out of range",
    ),
    "stiffness-angular-high": (
        dict(stiffness=[100.0, 100.0, 100.0, 10.0, 10.0, MAX_ROT + 1.0]),
        r"stiffness=.*out of range",
    ),
    "stiffness-string": (dict(stiffness="stiff"), r"stiffness='stiff' is not numeric"),
}


@pytest.mark.parametrize("fields,match", BAD_CARTESIAN.values(), ids=BAD_CARTESIAN.keys())
def test_bad_cartesian_field_is_rejected_naming_the_field(fields, match):
    with pytest.raises(InvalidTargetError, match=match):
        validate_cartesian_target(cartesian(**fields))


@pytest.mark.parametrize("target", [None, "0.5 0 0.3", (POS, DOWN), JointTarget(np.zeros(7))])
def test_non_target_objects_are_rejected_naming_the_type(target):
    with pytest.raises(InvalidTargetError, match=r"expected a CartesianTarget, got"):
        validate_cartesian_target(target)


def test_invalid_target_error_is_a_value_error():
    # Callers that only know ValueError still catch it.
    assert issubclass(InvalidTargetError, ValueError)


def test_numeric_strings_are_not_accepted_as_floats():
    # A target decoded from text with its numbers left as strings is a caller bug: never guess.
    with pytest.raises(InvalidTargetError, match=r"pos_m=.* is not numeric"):
        validate_cartesian_target(cartesian(pos_m=["0.5", "0", "0.3"]))


def test_good_target_comes_back_unchanged_as_float_arrays():
    twist = [0.1, 0.0, -0.1, 0.0, 0.2, 0.0]
    stiffness = [1000.0, 1000.0, 1000.0, 100.0, 100.0, 100.0]
    checked = validate_cartesian_target(
        CartesianTarget([0.5, 0, 0.3], [1, 0, 0, 0], twist, stiffness)
    )
    for value, expected in (
        (checked.pos_m, POS),
        (checked.quat_xyzw, DOWN),
        (checked.twist, twist),
        (checked.stiffness, stiffness),
    ):
        assert isinstance(value, np.ndarray) and value.dtype == float
        np.testing.assert_array_equal(value, expected)


def test_optional_fields_stay_none():
    checked = validate_cartesian_target(cartesian())
    assert checked.twist is None
    assert checked.stiffness is None


def test_quaternion_is_normalized_with_nonnegative_w():
    s = math.sqrt(0.5)
    # -q is the same rotation; a norm off by less than the tolerance is renormalized.
    scale = 1.0 + 0.5 * QUAT_NORM_TOLERANCE
    checked = validate_cartesian_target(cartesian(quat_xyzw=[0.0, -s * scale, 0.0, -s * scale]))
    np.testing.assert_allclose(checked.quat_xyzw, [0.0, s, 0.0, s], atol=1e-15)


@pytest.mark.parametrize(
    "stiffness",
    [[0.0] * 6, [MAX_LIN] * 3 + [MAX_ROT] * 3],
    ids=["all-zero", "all-at-maximum"],
)
def test_stiffness_range_is_inclusive(stiffness):
    np.testing.assert_array_equal(
        validate_cartesian_target(cartesian(stiffness=stiffness)).stiffness, stiffness
    )


# -- joint targets -------------------------------------------------------------------------------

Q = np.zeros(7)
BAD_JOINT = {
    "q-nan": (dict(q_rad=[0, 0, 0, NAN, 0, 0, 0]), r"q_rad=.*NaN or inf"),
    "q-inf": (dict(q_rad=[INF] * 7), r"q_rad=.*NaN or inf"),
    "q-6": (dict(q_rad=np.zeros(6)), r"q_rad has shape \(6,\); expected \(7,\)"),
    "q-matrix": (dict(q_rad=np.zeros((7, 7))), r"q_rad has shape \(7, 7\)"),
    "q-string": (dict(q_rad="home"), r"q_rad='home' is not numeric"),
    "dq-nan": (dict(q_rad=Q, dq_rad_s=[NAN] * 7), r"dq_rad_s=.*NaN or inf"),
    "dq-8": (dict(q_rad=Q, dq_rad_s=np.zeros(8)), r"dq_rad_s has shape \(8,\); expected \(7,\)"),
    "dq-string": (dict(q_rad=Q, dq_rad_s="slow"), r"dq_rad_s='slow' is not numeric"),
}


@pytest.mark.parametrize("fields,match", BAD_JOINT.values(), ids=BAD_JOINT.keys())
def test_bad_joint_field_is_rejected_naming_the_field(fields, match):
    with pytest.raises(InvalidTargetError, match=match):
        validate_joint_target(JointTarget(**fields))


@pytest.mark.parametrize("target", [None, np.zeros(7), cartesian()])
def test_non_joint_targets_are_rejected_naming_the_type(target):
    with pytest.raises(InvalidTargetError, match=r"expected a JointTarget, got"):
        validate_joint_target(target)


def test_good_joint_target_comes_back_as_float_arrays():
    q = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]
    checked = validate_joint_target(JointTarget(q, [0.1] * 7))
    np.testing.assert_array_equal(checked.q_rad, q)
    np.testing.assert_array_equal(checked.dq_rad_s, [0.1] * 7)
    assert validate_joint_target(JointTarget(q)).dq_rad_s is None
