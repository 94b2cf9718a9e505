"""Task registry: ``make_task(name)`` builds a fresh task object."""

from __future__ import annotations

from collections.abc import Callable

from robot_rl.sim.tasks.base import Expert, ExpertAction, GripperAction, Task
from robot_rl.sim.tasks.peg_insert import PegInsertTask
from robot_rl.sim.tasks.pick_cube import PickCubeTask
from robot_rl.sim.tasks.reach import ReachTask

TASKS: dict[str, Callable[[], Task]] = {
    "reach": ReachTask,
    "pick_cube": PickCubeTask,
    "peg_insert": PegInsertTask,
}


def make_task(name: str) -> Task:
    """A new task by name; raises KeyError naming the known tasks."""
    try:
        return TASKS[name]()
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}") from None


__all__ = ["TASKS", "Expert", "ExpertAction", "GripperAction", "Task", "make_task"]
