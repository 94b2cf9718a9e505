"""Shared test setup: a Hypothesis profile and one PyBullet twin per test module.

Building a twin loads the URDF (a fraction of a second), so each module shares one; the ``twin``
fixture teleports it back to the ready pose, which also zeroes its counters, before every test.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings
from robot_rl.sim.twin import READY_Q_RAD, PandaTwin

# No example database: it would write an untracked .hypothesis/ folder into the checkout. No
# deadline: the suite shares a loaded 2-core machine, so per-example wall time means nothing.
settings.register_profile("robot-rl", database=None, deadline=None)
settings.load_profile("robot-rl")


@pytest.fixture(scope="module")
def module_twin():
    twin = PandaTwin()
    yield twin
    twin.close()


@pytest.fixture
def twin(module_twin):
    """The module's twin at the ready pose, at rest, gripper open, time and counters at zero."""
    module_twin.reset(np.asarray(READY_Q_RAD), 0.08)
    return module_twin
