"""Flags that several command groups share: a config file with ``--set`` overrides, and the
CURVE key flags of a process that binds or connects sockets."""

from __future__ import annotations

import argparse
import errno
import socket
from pathlib import Path
from typing import Any, TypeVar

from robot_rl.cli.errors import CliError
from robot_rl.endpoints import DEFAULT_ENDPOINTS

T = TypeVar("T")


def add_config_flags(parser: argparse.ArgumentParser, what: str) -> None:
    """``--config FILE`` and repeatable ``--set KEY=VALUE`` for the dataclass named ``what``."""
    parser.add_argument("--config", type=Path, help=f"YAML file with {what} fields")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a {what} field, e.g. --set agent.utd_ratio=2 "
                        "(repeatable)")  # fmt: skip


def add_key_flags(parser: argparse.ArgumentParser, key: str | None) -> None:
    """``--keys``, ``--key`` (this process's key name, default ``key``) and ``--plaintext``."""
    parser.add_argument("--keys", default="keys", help="CURVE keys folder (robot-rl keys)")
    parser.add_argument("--key", default=key, help=f"this process's key name (default {key})")
    parser.add_argument("--plaintext", action="store_true",
                        help="no CURVE (refused unless every endpoint is loopback)")  # fmt: skip


def add_robot_flags(parser: argparse.ArgumentParser) -> None:
    """``--task`` of a twin behind a robot server, and the server's ``--commands`` and ``--state``
    endpoints."""
    parser.add_argument("--task", default="reach", help="the twin's task (default reach)")
    parser.add_argument("--commands", default=DEFAULT_ENDPOINTS.robot_commands,
                        help="robot server ROUTER endpoint (targets, requests)")  # fmt: skip
    parser.add_argument("--state", default=DEFAULT_ENDPOINTS.robot_state,
                        help="robot server state PUB endpoint")  # fmt: skip


def check_task(task: str) -> None:
    """Refuse a twin task that does not exist, naming the ones that do."""
    from robot_rl.sim.tasks import TASKS

    if task not in TASKS:
        raise CliError(f"task {task!r} unknown; known tasks: {sorted(TASKS)}")


def load(cls: type[T], path: Path | None, overrides: list[str]) -> T:
    """``cls`` from ``path`` (or its defaults) with ``overrides``; a bad config is a CliError."""
    from robot_rl.config import ConfigError, load_config

    try:
        return load_config(cls, path, overrides)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def given(**values: Any) -> dict[str, Any]:
    """The ``values`` a flag set (not None): the fields they override in a config."""
    return {name: value for name, value in values.items() if value is not None}


def at_least(flag: str, value: int, minimum: int, why: str = "") -> None:
    """Refuse ``--flag=value`` below ``minimum``."""
    if value < minimum:
        raise CliError(f"--{flag}={value}; need at least {minimum}{why}")


def port_free(host: str, port: int) -> bool:
    """Whether this machine could listen on (host, port) now, as aiohttp and ZMQ bind (with
    SO_REUSEADDR). A host that is not this machine's counts as free: nothing here binds it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno not in (errno.EADDRINUSE, errno.EACCES)
    return True


def check_console_port(console: Any, change: str = "--set console.port=PORT") -> None:
    """Refuse, before anything slow starts, a console (a ``ConsoleConfig``) that is enabled on a
    port another process holds; the one line says how to pick another (``change``)."""
    if console.enabled and console.port != 0 and not port_free(console.host, console.port):
        raise CliError(
            f"port {console.port} (the operator console, {console.host}) is in use "
            f"by another process; pick another with {change} (0: any free port)"
        )


def check_endpoint_port(endpoint: str, what: str, change: str) -> None:
    """Refuse, before anything slow starts, a ``tcp://HOST:PORT`` endpoint this process will bind
    on a port another process holds; the one line says how to pick another (``change``)."""
    if not endpoint.startswith("tcp://") or ":" not in endpoint[6:]:
        return  # ipc:// and the like: nothing to check here
    host, _, port = endpoint[6:].rpartition(":")
    host = "0.0.0.0" if host == "*" else host.strip("[]")
    if port.isdigit() and int(port) != 0 and not port_free(host, int(port)):
        raise CliError(f"port {port} ({what}, {host}) is in use by another process; pick another "
                       f"with {change}")  # fmt: skip
