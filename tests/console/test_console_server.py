"""The console server without a browser: tokens off loopback, refusals, malformed messages, and
frames and state reaching a websocket client."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from robot_rl.console.hub import ConsoleHub
from robot_rl.console.server import ConsoleConfig, ConsoleServer

pytestmark = pytest.mark.timeout(60)


def test_off_loopback_needs_a_long_token() -> None:
    with pytest.raises(ValueError, match=r"console\.token"):
        ConsoleConfig(host="0.0.0.0")
    with pytest.raises(ValueError, match="16 characters"):
        ConsoleConfig(host="0.0.0.0", token="short")
    assert ConsoleConfig(host="0.0.0.0", token="x" * 24).token


async def talk(url: str, token: str, hub: ConsoleHub) -> dict:
    import aiohttp

    seen: dict = {"frames": 0, "states": 0, "errors": 0}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/") as response:
            seen["no_token_status"] = response.status
        async with http.get(f"{url}/?token={token}") as response:
            seen["page_status"] = response.status
        async with http.get(f"{url}/static/../server.py") as response:
            seen["traversal_status"] = response.status
        async with http.ws_connect(f"{url}/ws?token={token}") as ws:
            await ws.send_str("{not json")
            await ws.send_str(json.dumps({"type": "control", "name": "self_destruct"}))
            await ws.send_str(json.dumps({"type": "control", "name": "take_over", "t_ms": 5}))
            await ws.send_str(json.dumps({"type": "key", "key": "w", "down": True}))
            hub.publish_frames({"front": np.zeros((16, 16, 3), np.uint8)})
            deadline = asyncio.get_running_loop().time() + 5
            while asyncio.get_running_loop().time() < deadline and (
                seen["frames"] < 1
                or seen["states"] < 1
                or seen["errors"] < 2
                or not hub.page.read().engaged
            ):
                message = await ws.receive(timeout=5)
                if message.type == aiohttp.WSMsgType.BINARY:
                    n = int.from_bytes(message.data[:2], "big")
                    header = json.loads(message.data[2 : 2 + n])
                    assert header["camera"] == "front" and message.data[2 + n :][:2] == b"\xff\xd8"
                    seen["frames"] += 1
                elif message.type == aiohttp.WSMsgType.TEXT:
                    data = json.loads(message.data)
                    seen["states"] += data["type"] == "state"
                    seen["errors"] += data["type"] == "error"
            seen["held_x"] = hub.page.read().twist[0]  # "w" is held while the page is open
    return seen


def test_server_refuses_bad_tokens_answers_malformed_messages_and_streams() -> None:
    hub = ConsoleHub()
    token = "t" * 20
    server = ConsoleServer(hub, ConsoleConfig(port=0, token=token), ["front"])
    server.start()
    try:
        seen = asyncio.run(talk(f"http://127.0.0.1:{server.port}", token, hub))
    finally:
        server.stop()
    assert seen["no_token_status"] == 403 and seen["page_status"] == 200
    assert seen["traversal_status"] == 404
    assert seen["frames"] >= 1 and seen["states"] >= 1
    assert seen["errors"] == 2  # bad JSON and an unknown control, both answered, none fatal
    controls = hub.take_controls()
    assert [c.name for c in controls] == ["take_over"] and controls[0].page_ms == 5
    assert seen["held_x"] == 1.0  # the held "w" key drives +x
    assert not hub.page.read().engaged  # a closed page holds no keys
