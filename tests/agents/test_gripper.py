"""Gripper discretization (``robot_rl.actions``: both ways, edges, teleop round trip) and the
double-DQN target."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from robot_rl.actions import (
    GRIPPER_CLOSE,
    GRIPPER_OPEN,
    GRIPPER_STAY,
    gripper_index_to_value,
    gripper_value_to_index,
)
from robot_rl.agents.gripper import double_dqn_target

# (command value, index) pairs, thresholds at +-0.5 with the edges themselves meaning "stay".
VALUE_TO_INDEX = [
    (-1.0, 0),
    (-0.75, 0),
    (-0.6, 0),
    (-0.5001, 0),
    (-0.5, 1),
    (-0.4, 1),
    (0.0, 1),
    (0.4, 1),
    (0.5, 1),
    (0.5001, 2),
    (0.6, 2),
    (1.0, 2),
]


def test_named_indices():
    assert (GRIPPER_CLOSE, GRIPPER_STAY, GRIPPER_OPEN) == (0, 1, 2)


@pytest.mark.parametrize(("value", "index"), VALUE_TO_INDEX)
def test_value_to_index_float(value, index):
    got = gripper_value_to_index(value)
    assert got == index
    assert isinstance(got, int)


def test_value_to_index_tensor_matches_table():
    values = torch.tensor([v for v, _ in VALUE_TO_INDEX], dtype=torch.float32)
    expected = torch.tensor([i for _, i in VALUE_TO_INDEX])
    got = gripper_value_to_index(values)
    assert got.dtype == torch.int64
    assert torch.equal(got, expected)


def test_value_to_index_keeps_tensor_shape():
    got = gripper_value_to_index(torch.tensor([[-1.0, 1.0], [0.0, -0.6]]))
    assert torch.equal(got, torch.tensor([[0, 2], [1, 0]]))


@pytest.mark.parametrize(("index", "value"), [(0, -1.0), (1, 0.0), (2, 1.0)])
def test_index_to_value(index, value):
    assert gripper_index_to_value(index) == value
    assert torch.equal(
        gripper_index_to_value(torch.tensor([index])), torch.tensor([value], dtype=torch.float32)
    )


@pytest.mark.parametrize(
    ("teleop", "sent"),
    [(-1.0, -1.0), (-0.6, -1.0), (-0.4, 0.0), (0.0, 0.0), (0.3, 0.0), (0.6, 1.0), (1.0, 1.0)],
)
def test_teleop_command_round_trip(teleop, sent):
    """What the operator commanded is what the label (and the robot) gets back."""
    assert gripper_index_to_value(gripper_value_to_index(teleop)) == sent


def test_close_command_is_not_truncated_to_stay():
    # The HIL-SERL bug: int() truncates toward zero, so int(-0.6) + 1 reads a close as "stay".
    assert int(-0.6) + 1 == GRIPPER_STAY
    assert gripper_value_to_index(-0.6) == GRIPPER_CLOSE
    assert gripper_value_to_index(torch.tensor(-0.6)).item() == GRIPPER_CLOSE


@pytest.mark.parametrize("index", [0, 1, 2])
def test_index_value_index_is_identity(index):
    assert gripper_value_to_index(gripper_index_to_value(index)) == index


@given(st.floats(-1.0, 1.0, allow_nan=False))
def test_value_round_trip_lands_in_the_same_region(value):
    sent = gripper_index_to_value(gripper_value_to_index(value))
    if value < -0.5:
        assert sent == -1.0
    elif value > 0.5:
        assert sent == 1.0
    else:
        assert sent == 0.0
    # Scalar and tensor paths agree (the tensor path runs in the learner's batches).
    assert gripper_value_to_index(torch.tensor([value], dtype=torch.float64)).item() == (
        gripper_value_to_index(value)
    )


@pytest.mark.parametrize("bad", [math.nan, 1.5, -1.01])
def test_value_out_of_range_is_an_error(bad):
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        gripper_value_to_index(bad)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        gripper_value_to_index(torch.tensor([0.0, bad]))


@pytest.mark.parametrize("bad", [-1, 3, 1.5, True])
def test_bad_index_is_an_error(bad):
    with pytest.raises(ValueError, match=re.escape("0 (close), 1 (stay) or 2 (open)")):
        gripper_index_to_value(bad)


def test_bad_index_tensor_is_an_error():
    with pytest.raises(ValueError, match="0, 1 or 2"):
        gripper_index_to_value(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="integer tensor"):
        gripper_index_to_value(torch.tensor([1.0]))


def test_double_dqn_target_uses_online_argmax_and_target_value():
    online = torch.tensor([[1.0, 5.0, 2.0], [0.0, 0.0, 9.0]])
    target = torch.tensor([[10.0, 3.0, 7.0], [4.0, 8.0, -1.0]])
    rewards = torch.tensor([1.0, 2.0])
    discounts = torch.tensor([0.5, 0.0])
    # Sample 0: online picks index 1, the target net rates it 3 (not its own max 10): 1 + 0.5 * 3.
    # Sample 1: terminal (discount 0): the reward alone.
    got = double_dqn_target(rewards, discounts, online, target)
    assert torch.allclose(got, torch.tensor([2.5, 2.0]))
