"""The console's web server (aiohttp, in its own thread): the page, its script, and one websocket
per open page.

Over the websocket the server pushes JSON ``state`` messages (``ConsoleHub.snapshot``) at
``state_hz`` and every new camera frame as a binary message: a 2-byte big-endian header length,
a JSON header ({camera, seq, stamp_ms}), then the JPEG. The page sends JSON: ``control`` (a
console control and the page's clock), ``key`` (teleop key down/up), ``gamepad`` (browser gamepad
axes and buttons) and ``latency`` (a frame's capture-to-display time ``ms``, and optionally
``received_ms``, capture to its arrival on the page's websocket, both measured by the page).
A control is answered with ``ack`` (a one-line confirmation) or ``error``. Any malformed message
(bad JSON, huge numbers, deep nesting, wrong types, binary, over ``MAX_MESSAGE_BYTES``) is
logged, counted in ``malformed`` and answered with an ``error`` message; it never closes the
socket or stops the server. Only a frame over ``MAX_FRAME_BYTES`` closes the socket (1009).

Security, on loopback too (a web page from anywhere can reach loopback through the browser):
- every request's ``Host`` must name this server (``127.0.0.1:PORT``, ``localhost:PORT``; for a
  wildcard bind, an IP address, ``localhost``, this machine's name or ``allowed_hosts``), which
  defeats DNS rebinding;
- a request carrying an ``Origin`` (every browser websocket does) must come from such a host,
  so no other site's page can open the websocket;
- the page and the websocket need the per-session token (``?token=``, compared in constant
  time): ``console.token`` or, when empty, a random one made at start and carried in the printed
  URL. It is plain HTTP: off loopback use it on a trusted lab network only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from robot_rl.console.hub import ConsoleHub, ControlRefusedError, HubConfig
from robot_rl.endpoints import DEFAULT_ENDPOINTS

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"console.js": "application/javascript", "console.css": "text/css",
                "favicon.svg": "image/svg+xml"}  # fmt: skip
MAX_MESSAGE_BYTES = 64 * 1024  # a longer page message gets an error reply
MAX_FRAME_BYTES = 1024 * 1024  # a longer one closes the socket (1009): the read is bounded
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_\-.~]{16,256}")  # URL-safe, no whitespace


@dataclass(frozen=True)
class ConsoleConfig:
    enabled: bool = False
    host: str = DEFAULT_ENDPOINTS.console_host
    port: int = DEFAULT_ENDPOINTS.console_port  # 0: any free port
    token: str = ""  # empty: a random per-session token, carried in the printed URL
    state_hz: float = 20.0
    allowed_hosts: tuple[str, ...] = ()  # extra Host names for a wildcard bind (DNS names)
    hub: HubConfig = field(default_factory=HubConfig)  # camera rate, JPEG, charts, undo

    def __post_init__(self) -> None:
        if self.token and not TOKEN_PATTERN.fullmatch(self.token):
            raise ValueError(
                f"console.token ({len(self.token)} characters) must be 16-256 URL-safe characters "
                "(letters, digits, - _ . ~), no whitespace: python -c 'import secrets; "
                "print(secrets.token_urlsafe(24))', or leave it empty for a per-session token"
            )
        if self.token.upper().startswith("CHANGE-ME"):
            raise ValueError("console.token is still the example's placeholder: set a random one")
        if not is_loopback(self.host) and not self.token:
            raise ValueError(
                f"console.host={self.host!r} is reachable from the network: set console.token to "
                "a random string of at least 16 characters (python -c 'import secrets; "
                "print(secrets.token_urlsafe(24))'), or bind to 127.0.0.1"
            )
        if not 0 <= self.port < 65536 or not 0 < self.state_hz <= 1000:
            raise ValueError(f"console.port={self.port} (0-65535) or state_hz={self.state_hz} "
                             "(0-1000] out of range")  # fmt: skip


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_host(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` or ``[v6]:port`` -> (host lower case, port); None when malformed."""
    value = value.strip().lower()
    match = re.fullmatch(r"\[([0-9a-f:.]+)\](?::(\d{1,5}))?|([a-z0-9.\-]+)(?::(\d{1,5}))?", value)
    if not match:
        return None
    host = match.group(1) or match.group(3)
    port = match.group(2) or match.group(4)
    return host, int(port) if port else None


class ConsoleServer:
    """Serves the console for ``hub`` (see the module docstring); ``start`` returns the URL."""

    def __init__(self, hub: ConsoleHub, config: ConsoleConfig, cameras: list[str]) -> None:
        self.hub, self.config, self.cameras = hub, config, list(cameras)
        self.token = config.token or secrets.token_urlsafe(24)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._runner: Any = None
        self.port = config.port
        self.error: BaseException | None = None
        self.clients = 0
        self.connections = 0  # websockets ever opened (names the pages: "page 3")
        self.malformed = 0  # malformed messages answered with an error
        self.refused_requests = 0  # requests refused for Host, Origin or token
        self._sockets: set[Any] = set()  # open websockets (server thread only)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "::") else self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/?token={self.token}"

    def start(self, timeout_s: float = 10.0) -> str:
        from robot_rl.extras import require

        require("aiohttp", "console", "the operator console")  # a clear error before the thread
        self._thread = threading.Thread(target=self._serve, name="console", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self.error is not None:
            raise RuntimeError(f"the console did not start: {self.error}") from self.error
        log.info("operator console at %s", self.url)
        return self.url

    def stop(self) -> None:
        """Close every page's websocket (1001, going away), then the server."""
        if self._loop is not None and self._loop.is_running():
            closing = asyncio.run_coroutine_threadsafe(self._close_sockets(), self._loop)
            try:
                closing.result(timeout=3.0)
            except Exception as exc:  # the server stops regardless
                log.warning("console: closing the pages' sockets: %r", exc)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    async def _close_sockets(self) -> None:
        from aiohttp import WSCloseCode

        for ws in list(self._sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"the console is stopping")

    # -- the server thread ---------------------------------------------------------------------
    def _serve(self) -> None:
        from aiohttp import web

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        app = web.Application(client_max_size=MAX_MESSAGE_BYTES, middlewares=[self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/favicon.ico", self._favicon)
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

    # -- who may ask ----------------------------------------------------------------------------
    def host_allowed(self, value: str) -> bool:
        """Whether ``value`` (a Host header, or an Origin's netloc) names this server."""
        parsed = split_host(value)
        if parsed is None:
            return False
        host, port = parsed
        if (port if port is not None else 80) != self.port:
            return False
        bind = self.config.host.lower()
        if host in ("localhost", *(h.lower() for h in self.config.allowed_hosts)):
            return True
        if bind in ("0.0.0.0", "::", ""):  # any address of this machine
            try:
                ipaddress.ip_address(host)
                return True  # an address literal cannot be rebound by DNS
            except ValueError:
                return host == socket.gethostname().lower()
        if is_loopback(bind):
            try:
                return ipaddress.ip_address(host).is_loopback
            except ValueError:
                return False
        return host == bind.strip("[]")

    def origin_allowed(self, origin: str | None) -> bool:
        """No Origin (not a browser) is fine; a browser's must be this server's own page."""
        if origin is None:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and self.host_allowed(parts.netloc)

    def _token_ok(self, request: Any) -> bool:
        given = request.query.get("token", "")
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _refuse(self, request: Any, why: str, status: int = 403) -> Any:
        from aiohttp import web

        self.refused_requests += 1
        log.warning("console: refused %s %s from %s: %s", request.method, request.path,
                    request.remote, why)  # fmt: skip
        return web.Response(status=status, text=why)

    async def _guard_impl(self, request: Any, handler: Any) -> Any:
        host = request.headers.get("Host", "")
        if not self.host_allowed(host):
            return self._refuse(request, f"Host {host[:80]!r} is not this console (open the URL "
                                "that robot-rl printed)", 421)  # fmt: skip
        origin = request.headers.get("Origin")
        if not self.origin_allowed(origin):
            return self._refuse(request, f"Origin {str(origin)[:80]!r} may not use this console")
        if request.path in ("/", "/ws") and not self._token_ok(request):
            return self._refuse(request, "console token missing or wrong: open the URL that "
                                "robot-rl printed (it carries ?token=...)")  # fmt: skip
        return await handler(request)

    @property
    def _guard(self) -> Any:
        from aiohttp import web

        @web.middleware
        async def guard(request: Any, handler: Any) -> Any:
            return await self._guard_impl(request, handler)

        return guard

    # -- routes -------------------------------------------------------------------------------
    async def _index(self, request: Any) -> Any:
        from aiohttp import web

        return web.FileResponse(STATIC / "index.html", headers={
            "Cache-Control": "no-store", "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; "
            "connect-src 'self'; frame-ancestors 'none'",
            "Referrer-Policy": "no-referrer"})  # fmt: skip

    async def _favicon(self, request: Any) -> Any:
        from aiohttp import web

        return web.FileResponse(STATIC / "favicon.svg", headers={"Content-Type": "image/svg+xml"})

    async def _static(self, request: Any) -> Any:
        from aiohttp import web

        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return web.FileResponse(STATIC / name, headers={"Content-Type": STATIC_FILES[name]})

    async def _websocket(self, request: Any) -> Any:
        from aiohttp import WSMsgType, web

        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES, heartbeat=10.0)
        await ws.prepare(request)
        self._sockets.add(ws)
        self.clients += 1
        self.connections += 1
        client = f"page {self.connections} ({request.remote})"
        await ws.send_json({"type": "hello", "cameras": self.cameras, "client": client,
                            "keys": self.hub.page.keyboard.keys,
                            "undo_window_s": self.hub.config.undo_window_s})  # fmt: skip
        sender = asyncio.ensure_future(self._push(ws))
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    reply = self.handle(message.data, client)
                elif message.type == WSMsgType.BINARY:
                    reply = self._malformed("binary messages are not accepted; send JSON text",
                                            message.data[:64])  # fmt: skip
                elif message.type == WSMsgType.ERROR:
                    break
                else:
                    continue
                if reply is not None and not ws.closed:
                    await ws.send_json(reply)
        except (ConnectionError, RuntimeError) as exc:
            log.info("console: %s went away: %s", client, exc)
        finally:
            sender.cancel()
            self._sockets.discard(ws)
            self.clients -= 1
            self.hub.client_left(client)  # a closed page holds no keys and no lock
        return ws

    def handle(self, text: str, client: str | None = None) -> dict[str, Any] | None:
        """One message from the page; an ``ack`` for a control, an ``error`` for anything
        malformed or refused, else None. Never raises."""
        try:
            if len(text) > MAX_MESSAGE_BYTES:
                raise ValueError(f"message of {len(text)} characters; at most {MAX_MESSAGE_BYTES}")
            msg = json.loads(text)
            if not isinstance(msg, dict):
                raise ValueError(f"a message is a JSON object, not {type(msg).__name__}")
            kind = msg.get("type")
            page_ms = _finite_or_none(msg.get("t_ms"), "t_ms")
            if kind == "control":
                name = _string(msg.get("name"), "name", 32)
                return {"type": "ack", "control": name,
                        "message": self.hub.control(name, page_ms, client)}  # fmt: skip
            if kind == "key":
                down = msg.get("down")
                if not isinstance(down, bool):
                    raise ValueError(f"key message: down={str(down)[:20]!r}; need true or false")
                self.hub.key(_string(msg.get("key"), "key", 16), down)
            elif kind == "gamepad":
                axes, buttons = msg.get("axes"), msg.get("buttons")
                if not isinstance(axes, list) or not isinstance(buttons, list):
                    raise ValueError("gamepad message: axes and buttons must be lists")
                axes_f = [_finite(a, "gamepad axis") for a in axes[:8]]
                self.hub.gamepad(axes_f, [bool(b) for b in buttons[:16]])
            elif kind == "latency":
                ms = _finite(msg.get("ms"), "latency ms")
                received = _finite_or_none(msg.get("received_ms"), "latency received_ms")
                if 0.0 <= ms < 60_000:
                    self.hub.stream_latency_ms.append(ms)
                    if received is not None and 0.0 <= received <= ms:
                        self.hub.page_received_ms.append(received)
            else:
                raise ValueError(f"unknown message type {str(kind)[:32]!r}; known: control, key, "
                                 "gamepad, latency")  # fmt: skip
        except ControlRefusedError as exc:
            return {"type": "error", "error": str(exc)[:300], "refused": True}
        except RecursionError:
            return self._malformed("JSON nested too deeply", text)
        except Exception as exc:  # anything a page sends must get an answer, not end the loop
            return self._malformed(str(exc), text)
        return None

    def _malformed(self, why: str, sample: Any) -> dict[str, Any]:
        self.malformed += 1
        if self.malformed <= 20 or self.malformed % 1000 == 0:  # a flood must not flood the log
            log.warning("console: malformed message %d from a page (%s): %.120r",
                        self.malformed, why[:200], sample[:120])  # fmt: skip
        return {"type": "error", "error": why[:300]}

    async def _push(self, ws: Any) -> None:
        """Each new frame as soon as the hub has it (the hub pokes this loop from the encoding
        thread: no polling thread between them), and the state every 1 / ``state_hz``."""
        loop = asyncio.get_running_loop()
        seen: dict[str, int] = {}
        period = 1.0 / self.config.state_hz
        next_state = 0.0
        fresh = asyncio.Event()

        def poke() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(fresh.set)

        self.hub.add_frame_listener(poke)
        try:
            while not ws.closed:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(fresh.wait(), max(0.0, next_state - loop.time()))
                fresh.clear()
                for frame in self.hub.frames_since(seen):
                    seen[frame.camera] = frame.seq
                    header = json.dumps({"camera": frame.camera, "seq": frame.seq,
                                         "stamp_ms": frame.stamp_s * 1e3}).encode()  # fmt: skip
                    await ws.send_bytes(len(header).to_bytes(2, "big") + header + frame.jpeg)
                    self.hub.sent_ms.append((time.time() - frame.stamp_s) * 1e3)
                if loop.time() >= next_state:
                    next_state = loop.time() + period
                    state = self.hub.snapshot()
                    state["clients"] = self.clients
                    await ws.send_json({"type": "state", **state})
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            return
        finally:
            self.hub.remove_frame_listener(poke)


def _finite(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field}={str(value)[:20]!r}; need a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        raise ValueError(f"{field}={str(value)[:20]}...; need a finite number") from None
    if not math.isfinite(number):
        raise ValueError(f"{field}={number}; need a finite number")
    return number


def _finite_or_none(value: Any, field: str) -> float | None:
    return None if value is None else _finite(value, field)


def _string(value: Any, field: str, max_len: int) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= max_len:
        raise ValueError(f"{field}={str(value)[:40]!r}; need a string of 1-{max_len} characters")
    return value
