"""The gripper in the action vector, shared by policies, envs, teleop and stored steps.

The gripper is the last action dim, a value in [-1, 1]. It maps to one of three indices by
thresholds at +-0.5 (never by ``int()``, which truncates toward zero and would read a teleop close
command of -0.6 as "stay"):

    value < -0.5  -> 0 close  -> -1.0
    value in [-0.5, 0.5] -> 1 stay -> 0.0
    value > 0.5   -> 2 open   -> +1.0

It sits below both the agents (whose gripper head learns the index) and the envs (which turn the
value into a gripper command), so neither imports the other.
"""

from __future__ import annotations

import math

import torch

GRIPPER_CLOSE, GRIPPER_STAY, GRIPPER_OPEN = 0, 1, 2
NUM_GRIPPER_ACTIONS = 3
GRIPPER_THRESHOLD = 0.5
# Tolerance on the [-1, 1] range, for values that went through float32 normalisation.
_RANGE_TOLERANCE = 1e-6


def gripper_value_to_index(x: float | torch.Tensor) -> int | torch.Tensor:
    """Gripper command value(s) in [-1, 1] -> index 0 close, 1 stay, 2 open.

    A float gives an int; a tensor of any shape gives an int64 tensor of the same shape.
    Raises ValueError for NaN or values outside [-1, 1].
    """
    if isinstance(x, torch.Tensor):
        bad = torch.isnan(x) | (x.abs() > 1.0 + _RANGE_TOLERANCE)
        if bool(bad.any()):
            raise ValueError(
                f"gripper values must be in [-1, 1]; got {x[bad].flatten()[:5].tolist()}"
            )
        index = torch.full(x.shape, GRIPPER_STAY, dtype=torch.int64, device=x.device)
        index[x < -GRIPPER_THRESHOLD] = GRIPPER_CLOSE
        index[x > GRIPPER_THRESHOLD] = GRIPPER_OPEN
        return index
    value = float(x)
    if math.isnan(value) or abs(value) > 1.0 + _RANGE_TOLERANCE:
        raise ValueError(f"gripper value must be in [-1, 1]; got {x!r}")
    if value < -GRIPPER_THRESHOLD:
        return GRIPPER_CLOSE
    if value > GRIPPER_THRESHOLD:
        return GRIPPER_OPEN
    return GRIPPER_STAY


def gripper_index_to_value(i: int | torch.Tensor) -> float | torch.Tensor:
    """Index (0 close, 1 stay, 2 open) -> command value -1.0, 0.0, +1.0.

    An int gives a float; an integer tensor gives a float32 tensor of the same shape.
    Raises ValueError for any other index.
    """
    if isinstance(i, torch.Tensor):
        if i.dtype.is_floating_point or i.dtype == torch.bool:
            raise ValueError(f"gripper indices must be an integer tensor; got dtype {i.dtype}")
        if bool(((i < 0) | (i >= NUM_GRIPPER_ACTIONS)).any()):
            raise ValueError(f"gripper indices must be 0, 1 or 2; got {i.unique().tolist()}")
        return i.to(torch.float32) - 1.0
    if isinstance(i, bool) or int(i) != i or not 0 <= int(i) < NUM_GRIPPER_ACTIONS:
        raise ValueError(f"gripper index must be 0 (close), 1 (stay) or 2 (open); got {i!r}")
    return float(int(i) - 1)
