"""Every default address of a robot-rl deployment, in one frozen config.

The defaults are loopback, so a single machine runs plaintext with no keys. A networked learner,
robot server or camera host binds ``tcp://*:PORT`` (or ``tcp://0.0.0.0:PORT``) with CURVE keys,
and its peers connect to ``tcp://HOST:PORT``; session and training configs override these fields
per rig. Ports: 5555-5556 learner links, 5560-5561 robot server, 5570 cameras, 8765 console.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Endpoints:
    """ZMQ endpoints (``tcp://host:port``) and the console's web address."""

    transitions: str = "tcp://127.0.0.1:5555"  # learner ROUTER: actors' steps in, acks out
    weights: str = "tcp://127.0.0.1:5556"  # learner PUB: policy weights
    robot_commands: str = "tcp://127.0.0.1:5560"  # robot server ROUTER: targets and requests
    robot_state: str = "tcp://127.0.0.1:5561"  # robot server PUB: the state stream
    cameras: str = "tcp://127.0.0.1:5570"  # camera publisher PUB (the twin's, on this host)
    cameras_host: str = "tcp://0.0.0.0:5570"  # a camera host's PUB, open to the learner's host
    console_host: str = "127.0.0.1"  # the operator console's HTTP server
    console_port: int = 8765


DEFAULT_ENDPOINTS = Endpoints()
