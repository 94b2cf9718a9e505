"""ZMQ CURVE keys and socket security: authenticated, encrypted links; plaintext only on loopback.

Keys are ZeroMQ certificate files (text, ZPL format, written by ``zmq.auth``): ``NAME.key`` holds
the public key and may be copied anywhere; ``NAME.key_secret`` holds both and stays on its machine
(mode 0600). A server (learner, robot server, camera publisher) allows exactly the clients whose
public ``.key`` files sit in its allowed-clients folder; everyone else is refused by the ZAP
handler before a single message is read.

``robot-rl keys generate --dir keys --name learner`` makes a pair. Plaintext sockets exist for
tests and for one-machine sessions: only when the config asks for them and only on loopback
(``tcp://127.0.0.1``, ``tcp://localhost``, ``tcp://[::1]``, ``ipc://``, ``inproc://``).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger(__name__)


class SecurityError(RuntimeError):
    """A socket that would be insecure, or keys that are missing or unreadable."""


@dataclass(frozen=True)
class SecurityConfig:
    """Where a process finds its keys.

    keys_dir: holds this process's ``<name>.key_secret`` and the peers' public ``.key`` files.
    name: this process's key pair. server_name: (clients) the server whose public key to trust.
    allowed_clients_dir: (servers) public keys of the clients to accept; default ``keys_dir /
    "allowed"``. plaintext: no CURVE at all (allowed on loopback endpoints only).
    """

    keys_dir: str = "keys"
    name: str = ""
    server_name: str = "learner"
    allowed_clients_dir: str = ""
    plaintext: bool = False

    @property
    def allowed_dir(self) -> Path:
        return Path(self.allowed_clients_dir or Path(self.keys_dir) / "allowed")


def is_loopback(endpoint: str) -> bool:
    """True for endpoints that cannot leave this machine: ``ipc://``, ``inproc://``, and
    ``tcp://HOST:PORT`` where HOST is ``localhost`` or a loopback IP address (127.0.0.0/8,
    ``[::1]``) and PORT a number or ``*``. Parsed, not prefix-matched: ``tcp://127.evil.example:1``
    is a host name and ``tcp://127.0.0.1;192.168.1.5:1`` (source;destination) leaves the
    machine, so neither counts."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or not rest:
        return False
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp" or ";" in rest:
        return False
    host, colon, port = rest.rpartition(":")
    if not colon or not (port.isdigit() or port == "*"):
        return False
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name or an interface name: it may resolve anywhere
        return False


def generate_keys(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Create ``name.key`` (public) and ``name.key_secret`` (0600) in ``directory``.

    Refuses to overwrite an existing pair (FileExistsError): rotating keys is a deliberate act.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"key name {name!r}; use a plain file name like 'learner' or 'actor-1'")
    directory = Path(directory)
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if public.exists() or secret.exists():
        raise FileExistsError(f"{public} or {secret} exists; delete both to make a new pair")
    directory.mkdir(parents=True, exist_ok=True)
    old_umask = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        public_file, secret_file = zmq.auth.create_certificates(str(directory), name)
    finally:
        os.umask(old_umask)
    os.chmod(public_file, 0o644)
    os.chmod(secret_file, 0o600)
    return Path(public_file), Path(secret_file)


def load_keypair(directory: str | Path, name: str) -> tuple[bytes, bytes]:
    """(public, secret) from ``name.key_secret``; SecurityError saying how to make one if absent."""
    path = Path(directory) / f"{name}.key_secret"
    if not path.is_file():
        raise SecurityError(
            f"no secret key {path}; create one with `robot-rl keys generate --dir {directory} "
            f"--name {name}`"
        )
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise SecurityError(f"cannot read key {path}: {exc}") from None
    if secret is None:
        raise SecurityError(f"{path} holds no secret key; pass the .key_secret file's pair")
    return public, secret


def load_public_key(directory: str | Path, name: str) -> bytes:
    """A peer's public key from ``name.key`` (or its ``.key_secret``)."""
    for suffix in (".key", ".key_secret"):
        path = Path(directory) / f"{name}{suffix}"
        if path.is_file():
            try:
                return zmq.auth.load_certificate(str(path))[0]
            except (OSError, ValueError) as exc:
                raise SecurityError(f"cannot read key {path}: {exc}") from None
    raise SecurityError(
        f"no public key {Path(directory) / (name + '.key')}; copy the peer's .key file there"
    )


class _Authenticators:
    """One ZAP authenticator per context (ZMQ allows one handler per context)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_context: dict[int, tuple[ThreadAuthenticator, set[str]]] = {}

    def allow(self, context: zmq.Context, allowed_dir: Path) -> None:
        with self._lock:
            entry = self._by_context.get(id(context))
            if entry is None:
                auth = ThreadAuthenticator(context, log=logging.getLogger(f"{__name__}.zap"))
                auth.start()
                entry = (auth, set())
                self._by_context[id(context)] = entry
            auth, dirs = entry
            dirs.add(str(allowed_dir))
            # configure_curve reads the folder now; several servers in one context share one set.
            auth.configure_curve(domain="*", location=str(allowed_dir))

    def stop(self, context: zmq.Context) -> None:
        with self._lock:
            entry = self._by_context.pop(id(context), None)
        if entry is not None:
            entry[0].stop()


AUTHENTICATORS = _Authenticators()


def secure_server(socket: zmq.Socket, endpoint: str, config: SecurityConfig) -> None:
    """Make ``socket`` a CURVE server that accepts only the allowed clients, then bind it."""
    if config.plaintext:
        _check_plaintext(endpoint)
    else:
        allowed = config.allowed_dir
        if not allowed.is_dir() or not any(allowed.glob("*.key")):
            raise SecurityError(
                f"no allowed client keys in {allowed}; copy each actor's public .key file there"
            )
        public, secret = load_keypair(config.keys_dir, config.name)
        AUTHENTICATORS.allow(socket.context, allowed)
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        socket.curve_server = True
    socket.bind(endpoint)


def secure_client(socket: zmq.Socket, endpoint: str, config: SecurityConfig) -> None:
    """Make ``socket`` a CURVE client of the configured server, then connect it."""
    if config.plaintext:
        _check_plaintext(endpoint)
    else:
        public, secret = load_keypair(config.keys_dir, config.name)
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        socket.curve_serverkey = load_public_key(config.keys_dir, config.server_name)
    socket.connect(endpoint)


def _check_plaintext(endpoint: str) -> None:
    if not is_loopback(endpoint):
        raise SecurityError(
            f"plaintext on {endpoint} would cross the network unauthenticated; use CURVE keys "
            "(robot-rl keys generate) or a loopback endpoint"
        )
    log.info("plaintext ZMQ on loopback endpoint %s", endpoint)
