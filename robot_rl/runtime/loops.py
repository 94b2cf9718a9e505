"""Moved: the replay sink is ``robot_rl.runtime.learner.ReplaySink``; the actor step is
``robot_rl.runtime.actor.ActorLoop``. Kept as an import path for the transport tests."""

from robot_rl.runtime.learner import ReplaySink

__all__ = ["ReplaySink"]
