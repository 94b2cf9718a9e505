"""The console's web server (aiohttp, in its own thread): the page, its script, and one websocket
per open page.

Over the websocket the server pushes JSON ``state`` messages (``ConsoleHub.snapshot``) at
``state_hz`` and every new camera frame as a binary message: a 2-byte big-endian header length,
a JSON header ({camera, seq, stamp_ms}), then the JPEG. The page sends JSON: ``control`` (a
console control and the page's clock), ``key`` (teleop key down/up), ``gamepad`` (browser gamepad
axes and buttons) and ``latency`` (a frame's capture-to-display time, measured by the page).
Malformed messages are logged and answered with an ``error`` message; they never stop the server.

Security: the server binds to loopback unless told otherwise; any other address needs a token
(``console.token``), which the page and the websocket must present (``?token=``), compared in
constant time. Use it on a trusted lab network only: it is plain HTTP.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robot_rl.console.hub import ConsoleHub

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"console.js": "application/javascript", "console.css": "text/css"}
MAX_MESSAGE_BYTES = 64 * 1024


@dataclass(frozen=True)
class ConsoleConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8765  # 0: any free port
    token: str = ""  # required when host is not loopback
    state_hz: float = 20.0

    def __post_init__(self) -> None:
        if not is_loopback(self.host) and len(self.token) < 16:
            raise ValueError(
                f"console.host={self.host!r} is reachable from the network: set console.token to "
                "a random string of at least 16 characters (python -c 'import secrets; "
                "print(secrets.token_urlsafe(24))'), or bind to 127.0.0.1"
            )
        if self.token.upper().startswith("CHANGE-ME"):
            raise ValueError("console.token is still the example's placeholder: set a random one")
        if not 0 <= self.port < 65536 or self.state_hz <= 0:
            raise ValueError(f"console.port={self.port} or state_hz={self.state_hz} out of range")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ConsoleServer:
    """Serves the console for ``hub`` (see the module docstring); ``start`` returns the URL."""

    def __init__(self, hub: ConsoleHub, config: ConsoleConfig, cameras: list[str]) -> None:
        self.hub, self.config, self.cameras = hub, config, list(cameras)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._runner: Any = None
        self.port = config.port
        self.error: BaseException | None = None
        self.clients = 0

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "::") else self.config.host
        query = f"?token={self.config.token}" if self.config.token else ""
        return f"http://{host}:{self.port}/{query}"

    def start(self, timeout_s: float = 10.0) -> str:
        self._thread = threading.Thread(target=self._serve, name="console", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self.error is not None:
            raise RuntimeError(f"the console did not start: {self.error}") from self.error
        log.info("operator console at %s", self.url)
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    # -- the server thread ---------------------------------------------------------------------
    def _serve(self) -> None:
        from aiohttp import web

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        app = web.Application(client_max_size=MAX_MESSAGE_BYTES)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/ws", self._websocket)
        try:
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.config.host, self.config.port)
            loop.run_until_complete(site.start())
            sockets = site._server.sockets if site._server else []
            if sockets:
                self.port = sockets[0].getsockname()[1]
        except BaseException as exc:  # reported by start()
            self.error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

    def _authorized(self, request: Any) -> bool:
        if not self.config.token:
            return True
        given = request.query.get("token", "")
        return hmac.compare_digest(given.encode(), self.config.token.encode())

    async def _index(self, request: Any) -> Any:
        from aiohttp import web

        if not self._authorized(request):
            log.warning("console: refused a page request from %s (bad token)", request.remote)
            return web.Response(status=403, text="console token missing or wrong: open the URL "
                                "that robot-rl printed (it carries ?token=...)")  # fmt: skip
        return web.FileResponse(STATIC / "index.html")

    async def _static(self, request: Any) -> Any:
        from aiohttp import web

        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return web.FileResponse(STATIC / name, headers={"Content-Type": STATIC_FILES[name]})

    async def _websocket(self, request: Any) -> Any:
        from aiohttp import WSMsgType, web

        if not self._authorized(request):
            log.warning("console: refused a websocket from %s (bad token)", request.remote)
            raise web.HTTPForbidden(text="console token missing or wrong")
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, heartbeat=10.0)
        await ws.prepare(request)
        self.clients += 1
        await ws.send_json({"type": "hello", "cameras": self.cameras})
        sender = asyncio.ensure_future(self._push(ws))
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    reply = self._handle(message.data)
                    if reply is not None:
                        await ws.send_json(reply)
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            sender.cancel()
            self.clients -= 1
            self.hub.page.keyboard.release_all()  # a closed page holds no keys
        return ws

    def _handle(self, text: str) -> dict[str, Any] | None:
        """One message from the page; an error reply for anything malformed."""
        try:
            msg = json.loads(text)
            kind = msg["type"]
            page_ms = msg.get("t_ms")
            page_ms = float(page_ms) if page_ms is not None else None
            if kind == "control":
                self.hub.control(str(msg["name"]), page_ms)
            elif kind == "key":
                self.hub.key(str(msg["key"])[:32], bool(msg["down"]))
            elif kind == "gamepad":
                axes = [float(a) for a in msg["axes"][:8]]
                buttons = [bool(b) for b in msg["buttons"][:16]]
                self.hub.gamepad(axes, buttons)
            elif kind == "latency":
                ms = float(msg["ms"])
                if 0.0 <= ms < 60_000:
                    self.hub.stream_latency_ms.append(ms)
            else:
                raise ValueError(f"unknown message type {kind!r}")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("console: malformed message from the page (%s): %.200s", exc, text)
            return {"type": "error", "error": str(exc)[:200]}
        return None

    async def _push(self, ws: Any) -> None:
        loop = asyncio.get_running_loop()
        seen: dict[str, int] = {}
        period = 1.0 / self.config.state_hz
        next_state = 0.0
        version = -1
        try:
            while not ws.closed:
                version = await loop.run_in_executor(None, self.hub.wait_change, version, period)
                for frame in self.hub.frames_since(seen):
                    seen[frame.camera] = frame.seq
                    header = json.dumps({"camera": frame.camera, "seq": frame.seq,
                                         "stamp_ms": frame.stamp_s * 1e3}).encode()  # fmt: skip
                    await ws.send_bytes(len(header).to_bytes(2, "big") + header + frame.jpeg)
                if loop.time() >= next_state:
                    next_state = loop.time() + period
                    await ws.send_json({"type": "state", **self.hub.snapshot()})
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            return
