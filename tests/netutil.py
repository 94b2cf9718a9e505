"""Helpers for tests on loopback: free ports, and the twin served by a robot server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from robot_rl.sim.scene import SceneConfig, TwinScene

from robot_rl.transport.robot_server import RobotClient, RobotEndpoints, RobotServer, SceneBackend
from robot_rl.transport.security import SecurityConfig

PLAIN = SecurityConfig(plaintext=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_endpoints() -> RobotEndpoints:
    return RobotEndpoints(f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}")


@contextmanager
def served_twin(task: str = "reach") -> Iterator[tuple[RobotServer, RobotClient]]:
    """A robot server over the ``task`` twin (no cameras) and a client whose state stream is up."""
    scene = TwinScene(SceneConfig(task=task, cameras=()))
    endpoints = loopback_endpoints()
    server = RobotServer(SceneBackend(scene), endpoints, PLAIN)
    server.start()
    client = RobotClient(endpoints, PLAIN)
    try:
        client.latest(timeout_s=10.0)
        yield server, client
    finally:
        client.close()
        server.stop()
        scene.close()
