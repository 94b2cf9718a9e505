"""Fuzzing the console's websocket: a seeded generator sends 2 500 malformed messages (broken and
non-object JSON, wrong types, huge integers, NaN and infinities, deep nesting, unknown keys and
controls, binary frames, long strings). Each gets an error reply on an open socket; afterwards
the server is alive, a fresh valid client still works, no control reached the actor, and the
process's resident memory grew by a bounded amount."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from robot_rl.console.hub import ConsoleHub
from robot_rl.console.server import ConsoleConfig, ConsoleServer

pytestmark = pytest.mark.timeout(120)

MESSAGES = 2500
RSS_GROWTH_LIMIT_MB = 40.0


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def nested(depth: int, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "0" + "}" * depth


def malformed(rng: random.Random) -> str | bytes:
    """One message the console must refuse (never a valid control, key, gamepad or latency)."""
    kind = rng.randrange(14)
    junk = "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(1, 60)))
    if kind == 0:
        return junk  # not JSON (or a JSON scalar, which is not an object)
    if kind == 1:
        return json.dumps([rng.random() for _ in range(rng.randrange(5))])
    if kind == 2:
        return json.dumps({"type": junk})
    if kind == 3:
        return json.dumps({"type": "control", "name": junk + "_x"})
    if kind == 4:
        return json.dumps({"type": "control", "name": rng.choice([None, 5, [], {}, True])})
    if kind == 5:
        digits = "9" * rng.randrange(310, 6000)  # past float range, or past Python's 4300 digits
        kind_name = rng.choice(["latency", "control"])
        return f'{{"type": "{kind_name}", "name": "pause", "ms": {digits}, "t_ms": {digits}}}'
    if kind == 6:
        return f'{{"type": "latency", "ms": {rng.choice(["NaN", "Infinity", "-Infinity"])}}}'
    if kind == 7:
        return nested(rng.randrange(1000, 30000), rng)
    if kind == 8:
        return json.dumps({"type": "key", "key": "F" + str(rng.randrange(100)), "down": True})
    if kind == 9:
        return json.dumps({"type": "key", "key": "w", "down": rng.choice([None, 1, "true", []])})
    if kind == 10:
        return json.dumps(
            {"type": "gamepad", "axes": rng.choice([None, "x", {"0": 1}, 5]), "buttons": []}
        )
    if kind == 11:
        axis = rng.choice(["NaN", "Infinity", "1e999"])
        return f'{{"type": "gamepad", "axes": [{axis}], "buttons": []}}'
    if kind == 12:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    return json.dumps({"type": "control", "name": "x" * rng.randrange(33, 80_000)})


async def flood(url: str, rng: random.Random) -> tuple[int, int, bool]:
    import aiohttp

    errors = sent = 0
    async with aiohttp.ClientSession() as http:
        for _connection in range(5):  # several pages, one after another
            async with http.ws_connect(url) as ws:
                assert (await ws.receive_json(timeout=10))["type"] == "hello"
                for _ in range(MESSAGES // 5):
                    message = malformed(rng)
                    if isinstance(message, bytes):
                        await ws.send_bytes(message)
                    else:
                        await ws.send_str(message)
                    sent += 1
                    while True:  # its reply (state pushes and frames may come in between)
                        reply = await ws.receive(timeout=10)
                        if reply.type != aiohttp.WSMsgType.TEXT:
                            raise AssertionError(f"the socket did not answer: {reply}")
                        data = json.loads(reply.data)
                        if data["type"] in ("error", "ack"):
                            errors += data["type"] == "error"
                            break
                closed = ws.closed
    return sent, errors, not closed


async def valid_client(url: str) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.receive_json(timeout=10)
        await ws.send_str(json.dumps({"type": "control", "name": "pause", "t_ms": 1.0}))
        while True:
            data = await ws.receive_json(timeout=10)
            if data["type"] in ("ack", "error"):
                return data


def test_2500_malformed_messages_leave_the_console_alive_and_bounded() -> None:
    hub = ConsoleHub()
    server = ConsoleServer(hub, ConsoleConfig(port=0, state_hz=5.0), ["front"])
    server.start()
    url = f"http://127.0.0.1:{server.port}/ws?token={server.token}"
    try:
        asyncio.run(valid_client(url))  # warm up allocations before measuring
        hub.take_controls()
        before = rss_mb()
        sent, errors, open_after = asyncio.run(flood(url, random.Random(17)))
        after = rss_mb()
        assert sent == MESSAGES and errors == MESSAGES and open_after
        assert server.malformed == MESSAGES
        assert hub.take_controls() == []  # nothing malformed reached the actor
        assert not hub.page.read().engaged  # and no key is held
        assert server._thread is not None and server._thread.is_alive()
        reply = asyncio.run(valid_client(url))
        assert reply == {"type": "ack", "control": "pause", "message": "pause sent"}
        assert [c.name for c in hub.take_controls()] == ["pause"]
        assert after - before < RSS_GROWTH_LIMIT_MB, f"RSS grew {after - before:.1f} MB"
    finally:
        server.stop()
