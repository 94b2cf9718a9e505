"""The console server without a browser: tokens (on loopback too), Host and Origin checks against
DNS rebinding and other sites' pages, malformed messages answered without closing the socket, and
frames and state reaching a websocket client."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from robot_rl.console.hub import ConsoleHub
from robot_rl.console.server import ConsoleConfig, ConsoleServer, split_host

pytestmark = pytest.mark.timeout(60)


def test_config_refuses_bad_tokens() -> None:
    with pytest.raises(ValueError, match=r"console\.token"):
        ConsoleConfig(host="0.0.0.0")
    with pytest.raises(ValueError, match="16-256 URL-safe characters"):
        ConsoleConfig(host="0.0.0.0", token="short")
    with pytest.raises(ValueError, match="no whitespace"):
        ConsoleConfig(token=" " * 20)
    with pytest.raises(ValueError, match="no whitespace"):
        ConsoleConfig(token="a" * 10 + " " + "b" * 10)
    with pytest.raises(ValueError, match="placeholder"):
        ConsoleConfig(token="CHANGE-ME-to-a-long-random-string")
    with pytest.raises(ValueError, match="state_hz"):
        ConsoleConfig(state_hz=0)
    assert ConsoleConfig(host="0.0.0.0", token="x" * 24).token


def test_split_host() -> None:
    assert split_host("127.0.0.1:8765") == ("127.0.0.1", 8765)
    assert split_host("[::1]:80") == ("::1", 80)
    assert split_host("LocalHost") == ("localhost", None)
    assert split_host("evil.example:80/x") is None
    assert split_host("a b:1") is None


@pytest.fixture
def served() -> Iterator[tuple[ConsoleServer, ConsoleHub]]:
    hub = ConsoleHub()
    server = ConsoleServer(hub, ConsoleConfig(port=0), ["front"])
    server.start()
    try:
        yield server, hub
    finally:
        server.stop()


def test_loopback_console_has_a_per_session_token_in_its_url(served) -> None:
    server, _ = served
    assert len(server.token) >= 24 and server.url.endswith(f"?token={server.token}")
    other = ConsoleServer(ConsoleHub(), ConsoleConfig(port=0), [])
    assert other.token != server.token  # made per session, not a constant


async def fetch(url: str, headers: dict[str, str] | None = None) -> int:
    import aiohttp

    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers=headers or {}, allow_redirects=False) as response,
    ):
        return response.status


async def ws_status(url: str, headers: dict[str, str]) -> int:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url, headers=headers) as ws:
                await ws.receive_json(timeout=5)  # hello
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


def test_page_and_websocket_check_token_host_and_origin(served) -> None:
    server, _ = served
    base = f"http://127.0.0.1:{server.port}"
    t = server.token
    own = {"Origin": base}

    async def probe() -> dict[str, int]:
        return {
            "page": await fetch(f"{base}/?token={t}"),
            "page_localhost_host": await fetch(
                f"{base}/?token={t}", {"Host": f"localhost:{server.port}"}
            ),
            "no_token": await fetch(f"{base}/"),
            "wrong_token": await fetch(f"{base}/?token={'x' * 32}"),
            "whitespace_token": await fetch(f"{base}/?token=%20%20%20"),
            "rebinding_host": await fetch(f"{base}/?token={t}", {"Host": "evil.example"}),
            "rebinding_host_port": await fetch(
                f"{base}/?token={t}", {"Host": f"evil.example:{server.port}"}
            ),
            "other_port_host": await fetch(f"{base}/?token={t}", {"Host": "127.0.0.1:1"}),
            "traversal": await fetch(f"{base}/static/../server.py"),
            "favicon": await fetch(f"{base}/favicon.ico"),
            "ws_own_origin": await ws_status(f"{base}/ws?token={t}", own),
            "ws_no_origin": await ws_status(f"{base}/ws?token={t}", {}),
            "ws_evil_origin": await ws_status(
                f"{base}/ws?token={t}", {"Origin": "http://evil.example"}
            ),
            "ws_null_origin": await ws_status(f"{base}/ws?token={t}", {"Origin": "null"}),
            "ws_evil_host": await ws_status(
                f"{base}/ws?token={t}", {**own, "Host": "evil.example"}
            ),
            "ws_no_token": await ws_status(f"{base}/ws", own),
        }

    status = asyncio.run(probe())
    assert status == {
        "page": 200,
        "page_localhost_host": 200,
        "no_token": 403,
        "wrong_token": 403,
        "whitespace_token": 403,
        "rebinding_host": 421,
        "rebinding_host_port": 421,
        "other_port_host": 421,
        "traversal": 404,
        "favicon": 200,
        "ws_own_origin": 101,
        "ws_no_origin": 101,
        "ws_evil_origin": 403,
        "ws_null_origin": 403,
        "ws_evil_host": 421,
        "ws_no_token": 403,
    }
    assert server.refused_requests == 10


def test_wildcard_bind_accepts_address_literals_not_names() -> None:
    server = ConsoleServer(
        ConsoleHub(),
        ConsoleConfig(host="0.0.0.0", port=0, token="k" * 20, allowed_hosts=("rig-7.lab",)),
        [],
    )
    server.port = 8765
    assert server.host_allowed("192.168.1.5:8765") and server.host_allowed("[::1]:8765")
    assert server.host_allowed("rig-7.lab:8765") and server.host_allowed("localhost:8765")
    assert not server.host_allowed("evil.example:8765")  # a DNS name could be rebound
    assert not server.host_allowed("192.168.1.5:9999")
    assert server.origin_allowed("http://rig-7.lab:8765") and server.origin_allowed(None)
    assert not server.origin_allowed("https://evil.example") and not server.origin_allowed("null")


def test_a_page_reports_when_a_frame_arrived_and_when_it_showed() -> None:
    hub = ConsoleHub()
    server = ConsoleServer(hub, ConsoleConfig(port=0), [])
    assert server.handle(json.dumps({"type": "latency", "ms": 50.0, "received_ms": 41.5})) is None
    assert server.handle(json.dumps({"type": "latency", "ms": 30.0})) is None  # an older page
    # arrival after display is not a measurement; it is left out of the breakdown
    assert server.handle(json.dumps({"type": "latency", "ms": 20.0, "received_ms": 25.0})) is None
    assert list(hub.stream_latency_ms) == [50.0, 30.0, 20.0]
    assert list(hub.page_received_ms) == [41.5]


MALFORMED: list[tuple[str, str]] = [
    ("{not json", "Expecting property name"),
    ("[1, 2]", "JSON object, not list"),
    ('"control"', "JSON object, not str"),
    (json.dumps({"type": "control", "name": "self_destruct"}), "unknown console control"),
    (json.dumps({"type": "control", "name": ["take_over"]}), "need a string"),
    ('{"type": "control", "name": "pause", "t_ms": ' + "9" * 400 + "}", "need a finite"),
    ('{"type": "latency", "ms": ' + "9" * 5000 + "}", "digits"),  # Python's int limit
    ('{"type": "latency", "ms": NaN}', "finite"),
    ('{"type": "latency", "ms": 50, "received_ms": "soon"}', "received_ms='soon'; need a number"),
    ('{"type": "gamepad", "axes": [Infinity], "buttons": []}', "finite"),
    (json.dumps({"type": "gamepad", "axes": {"0": 1}, "buttons": []}), "must be lists"),
    ("[" * 20000 + "]" * 20000, "nested too deeply"),
    ('{"a":' * 5000 + "1" + "}" * 5000, "nested too deeply"),
    (json.dumps({"type": "key", "key": "F13", "down": True}), "not a teleop key"),
    (json.dumps({"type": "key", "key": "w", "down": "yes"}), "need true or false"),
    (json.dumps({"type": ["request"]}), "unknown message type"),
]


async def talk(url: str, hub: ConsoleHub) -> dict[str, Any]:
    import aiohttp

    seen: dict[str, Any] = {"frames": 0, "states": 0, "errors": []}
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        hello = await ws.receive_json(timeout=5)
        seen["hello"] = hello
        for text, _ in MALFORMED:
            await ws.send_str(text)
        await ws.send_bytes(b"\x00" * 100)
        # the key first: the server handles a page's messages in order, so the control's ack
        # also says that the key is held
        await ws.send_str(json.dumps({"type": "key", "key": "w", "down": True}))
        await ws.send_str(json.dumps({"type": "control", "name": "take_over", "t_ms": 5}))
        hub.publish_frames({"front": np.zeros((16, 16, 3), np.uint8)})
        while seen["frames"] < 1 or seen["states"] < 1 or "ack" not in seen:
            message = await ws.receive(timeout=5)
            if message.type == aiohttp.WSMsgType.BINARY:
                n = int.from_bytes(message.data[:2], "big")
                header = json.loads(message.data[2 : 2 + n])
                assert header["camera"] == "front" and message.data[2 + n :][:2] == b"\xff\xd8"
                seen["frames"] += 1
            elif message.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(message.data)
                seen["states"] += data["type"] == "state"
                if data["type"] == "error":
                    seen["errors"].append(data["error"])
                if data["type"] == "ack":
                    seen["ack"] = data
            else:
                raise AssertionError(f"the socket closed: {message}")
        seen["held_x"] = hub.page.read().twist[0]  # "w" is held while the page is open
        seen["closed"] = ws.closed
    return seen


def test_malformed_messages_get_error_replies_and_the_socket_stays_open(served) -> None:
    server, hub = served
    seen = asyncio.run(talk(f"http://127.0.0.1:{server.port}/ws?token={server.token}", hub))
    assert seen["hello"]["cameras"] == ["front"] and seen["hello"]["client"].startswith("page 1")
    assert seen["hello"]["keys"]["w"] == "+x"
    assert len(seen["errors"]) == len(MALFORMED) + 1  # each answered once, the binary one too
    for (_, expected), error in zip(MALFORMED, seen["errors"], strict=False):
        assert expected in error, (expected, error)
    assert "binary" in seen["errors"][-1]
    assert server.malformed == len(MALFORMED) + 1
    assert not seen["closed"] and seen["frames"] >= 1 and seen["states"] >= 1
    assert seen["ack"]["control"] == "take_over" and "sent" in seen["ack"]["message"]
    controls = hub.take_controls()
    assert [c.name for c in controls] == ["take_over"] and controls[0].page_ms == 5
    assert controls[0].client == seen["hello"]["client"]
    assert seen["held_x"] == 1.0  # the held "w" key drives +x
    assert hub.snapshot()["owner"] == seen["hello"]["client"]
    deadline = time.monotonic() + 20  # the server notices the closed page on its own thread
    while hub.page.read().engaged and time.monotonic() < deadline:
        hub.wait_change(hub.version, 0.01)
    assert not hub.page.read().engaged  # a closed page holds no keys
