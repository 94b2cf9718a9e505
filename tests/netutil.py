"""Helpers for tests on loopback: free ports, and the twin served by a robot server."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from robot_rl.sim.scene import SceneConfig, TwinScene

from robot_rl.transport.robot_server import RobotClient, RobotEndpoints, RobotServer, SceneBackend
from robot_rl.transport.security import SecurityConfig

PLAIN = SecurityConfig(plaintext=True)


# Ports are drawn below Linux's ephemeral range (32768-60999): a port the OS hands out for bind(0)
# can be taken a moment later by some socket's outgoing connection, which made a test's later bind
# fail with "Address already in use". No port is handed out twice in one test process.
_PORT_RANGE = (20000, 32000)
_handed_out: set[int] = set()
_rng = random.Random(os.getpid())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now and no other call returned."""
    for _ in range(1000):
        port = _rng.randrange(*_PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {_PORT_RANGE} after 1000 tries")


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
