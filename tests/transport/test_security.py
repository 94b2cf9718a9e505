"""CURVE keys and socket security: allowed clients talk, unknown keys are refused, no plaintext
off loopback."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import zmq

from robot_rl.transport.security import (
    AUTHENTICATORS,
    SecurityConfig,
    SecurityError,
    generate_keys,
    is_loopback,
    load_keypair,
    secure_client,
    secure_server,
)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """learner + actor pairs; the actor's public key is allowed, the intruder's is not."""
    generate_keys(tmp_path, "learner")
    actor_public, _ = generate_keys(tmp_path, "actor")
    generate_keys(tmp_path / "elsewhere", "intruder")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "actor.key").write_bytes(actor_public.read_bytes())
    return tmp_path


def request(ctx: zmq.Context, endpoint: str, config: SecurityConfig) -> bytes | None:
    """One request to the server; None if no reply within a second."""
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    sock.rcvtimeo = 1000
    try:
        secure_client(sock, endpoint, config)
        sock.send(b"ping")
        return sock.recv()
    except zmq.Again:
        return None
    finally:
        sock.close()


def serve_once(ctx: zmq.Context, endpoint: str, config: SecurityConfig) -> zmq.Socket:
    server = ctx.socket(zmq.REP)
    server.linger = 0
    secure_server(server, endpoint, config)
    return server


def test_allowed_client_is_served_and_unknown_key_is_refused(keys: Path) -> None:
    ctx = zmq.Context()
    try:
        server = serve_once(ctx, "tcp://127.0.0.1:0", SecurityConfig(str(keys), "learner"))
        endpoint = server.getsockopt_string(zmq.LAST_ENDPOINT)
        poller = zmq.Poller()
        poller.register(server, zmq.POLLIN)

        # The intruder knows the server's public key but is not in allowed/.
        (keys / "elsewhere" / "learner.key").write_bytes((keys / "learner.key").read_bytes())
        intruder = SecurityConfig(str(keys / "elsewhere"), "intruder", server_name="learner")
        assert request(ctx, endpoint, intruder) is None
        assert not poller.poll(100), "the server must never see the intruder's message"

        actor = SecurityConfig(str(keys), "actor", server_name="learner")
        client = ctx.socket(zmq.REQ)
        client.linger = 0
        secure_client(client, endpoint, actor)
        client.send(b"ping")
        assert poller.poll(2000), "the allowed actor's request did not arrive"
        assert server.recv() == b"ping"
        server.send(b"pong")
        assert client.recv() == b"pong"
        client.close()
        server.close()
    finally:
        AUTHENTICATORS.stop(ctx)
        ctx.term()


def test_plaintext_only_on_loopback() -> None:
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.PUB)
        sock.linger = 0
        with pytest.raises(SecurityError, match="plaintext"):
            secure_server(sock, "tcp://0.0.0.0:5999", SecurityConfig(plaintext=True))
        with pytest.raises(SecurityError, match="plaintext"):
            secure_client(sock, "tcp://10.0.0.5:5999", SecurityConfig(plaintext=True))
        secure_server(sock, "tcp://127.0.0.1:0", SecurityConfig(plaintext=True))
        sock.close()
    finally:
        ctx.term()


@pytest.mark.parametrize(
    ("endpoint", "loopback"),
    [("tcp://127.0.0.1:5555", True), ("tcp://localhost:1", True), ("tcp://[::1]:2", True),
     ("ipc:///tmp/x", True), ("inproc://a", True), ("tcp://0.0.0.0:5555", False),
     ("tcp://192.168.1.4:5555", False), ("tcp://localhost.evil.com:1", False),
     ("tcp://127.attacker.example:5555", False), ("tcp://127.0.0.1;192.168.1.5:5555", False),
     ("tcp://127.0.0.1:*", True), ("tcp://127.9.8.7:1", True), ("tcp://[::1]:*", True),
     ("tcp://127.0.0.1", False), ("tcp://127.0.0.1:55x", False), ("tcp://[::2]:1", False),
     ("udp://127.0.0.1:1", False), ("tcp://:5555", False), ("127.0.0.1:5555", False),
     ("ipc://", False)],
)  # fmt: skip
def test_is_loopback(endpoint: str, loopback: bool) -> None:
    assert is_loopback(endpoint) is loopback


def test_generated_secret_is_private_and_pairs_are_not_overwritten(tmp_path: Path) -> None:
    public, secret = generate_keys(tmp_path, "learner")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    pub, sec = load_keypair(tmp_path, "learner")
    assert len(pub) == len(sec) == 40  # Z85 of 32 bytes
    assert b"secret" not in public.read_bytes()
    with pytest.raises(FileExistsError):
        generate_keys(tmp_path, "learner")
    with pytest.raises(ValueError, match="plain file name"):
        generate_keys(tmp_path, "../up")


def test_missing_keys_say_how_to_make_them(tmp_path: Path) -> None:
    with pytest.raises(SecurityError, match="robot-rl keys generate"):
        load_keypair(tmp_path, "learner")
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.ROUTER)
        sock.linger = 0
        with pytest.raises(SecurityError, match="allowed client keys"):
            secure_server(sock, "tcp://127.0.0.1:0", SecurityConfig(str(tmp_path), "learner"))
        sock.close()
    finally:
        ctx.term()


def test_keys_generate_cli(tmp_path: Path, capsys, caplog) -> None:
    from robot_rl import cli

    assert cli.main(["keys", "generate", "--dir", str(tmp_path), "--name", "actor-1"]) == 0
    assert (tmp_path / "actor-1.key").is_file() and (tmp_path / "actor-1.key_secret").is_file()
    assert "public key" in capsys.readouterr().out
    assert cli.main(["keys", "generate", "--dir", str(tmp_path), "--name", "actor-1"]) == 2
    assert "delete both" in caplog.text
