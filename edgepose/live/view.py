"""The live view in the browser behind ``edgepose webcam --view [HOST:]PORT`` (standard library only).

:class:`LiveView` serves one small page (no external assets) with a card per source: its annotated video as
MJPEG (``/stream/N``), its stats (fps, persons, per-stage ms) and its latest JSON record, polled from
``/stats``, and a badge when the source waits, stalls or ended. A browser opens at most six connections per
server, so the page streams the first five sources and shows the others as JPEG snapshots (``/frame/N``)
refreshed with the stats. The pipeline calls :meth:`LiveView.publish` with each frame's stats and record, and
with the annotated image when :meth:`LiveView.wants_image` says someone watches (at most ``max_fps`` images
per second): nobody watching costs no drawing and no encoding. Publishing only stores references (O(1), never
blocks): each viewer connection has its own thread, which JPEG-encodes the newest image when it is ready for
one (once per image, shared by all viewers of that source) and skips the images it had no time for. A viewer
that stops reading holds only its own thread and is dropped after :data:`WRITE_TIMEOUT` seconds.

With a token, every request needs ``?token=...`` (compared in constant time); without one, only requests
addressed to a loopback name are answered (a page elsewhere cannot reach the view through DNS rebinding).
"""
import errno
import hmac
import ipaddress
import json
import re
import socket
import threading
import time
import socketserver
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Callable, Dict, Optional, Sequence, Tuple
from urllib.parse import parse_qs, quote, urlsplit

import cv2
import numpy as np

from edgepose.errors import InputError, InputTypeError

#: Seconds a viewer may take to accept data before its connection is dropped.
WRITE_TIMEOUT = 10.0
#: A running source without a new frame for this many seconds is shown as stalled.
STALL_AFTER = 5.0
#: Seconds a request for a source's snapshot (``/frame/N``) counts as someone watching it.
SNAPSHOT_INTEREST = 2.0
_LOOPBACK_NAMES = ("localhost",)
_BOUNDARY = "edgepose-frame"
_PORT = re.compile(r"[0-9]{1,5}")


def parse_view_address(text: str) -> Tuple[str, int]:
    """``"[HOST:]PORT"`` (``"8080"``, ``"0.0.0.0:8080"``, ``"[::1]:8080"``) -> (host, port); host defaults to
    127.0.0.1, port 0 means any free port."""
    value = str(text).strip()
    host, sep, port = value.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    if (sep and not host) or not _PORT.fullmatch(port) or int(port) > 65535 or (":" in host and not bracketed):
        raise InputError("--view takes [HOST:]PORT (8080, 0.0.0.0:8080, [::1]:8080; port 0..65535), got %r" % text)
    return host or "127.0.0.1", int(port)


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_view_binding(host: str, token: Optional[str]) -> Optional[str]:
    """None for a loopback ``host``; else the warning line to print when a ``token`` protects the view; raises
    :class:`InputError` for a non-loopback host without a token."""
    if token is not None and not token:
        raise InputError("--view-token is empty: give a secret string (e.g. from `openssl rand -hex 16`)")
    if _is_loopback(host):
        return None
    if not token:
        raise InputError("the view on %s would be reachable from the network: --view-token TOKEN is required "
                         "(viewers then open the URL with ?token=TOKEN), or bind 127.0.0.1" % host)
    return ("the view is reachable from the network at %s: anyone with the token can watch, and plain HTTP "
            "carries the token unencrypted (use it on a trusted network or behind a TLS proxy)" % host)


class _Frame:
    """One published image of a source: its sequence number (0, 1, ...), the image, when it came."""

    __slots__ = ("seq", "image", "time")

    def __init__(self, seq: int, image: np.ndarray) -> None:
        self.seq, self.image, self.time = seq, image, time.monotonic()


class _Source:
    """One source: its latest stats, record and image, its end, its viewers, and its JPEG encoded on demand."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.changed = threading.Condition()
        self.update: Optional[Tuple[dict, dict, float]] = None  # stats, record, time of the latest publish()
        self.frame: Optional[_Frame] = None
        self.ended: Optional[str] = None
        self.viewers = 0  # open MJPEG streams
        self.snapshot_until = 0.0  # a snapshot (/frame/N) viewer counts as watching until then
        self._encode = threading.Lock()
        self._jpeg: Tuple[int, bytes] = (-1, b"")

    def jpeg(self, quality: int) -> Tuple[int, bytes]:
        """(sequence number, JPEG) of the newest image, encoded at most once per image."""
        with self._encode:
            frame = self.frame
            if frame is not None and frame.seq != self._jpeg[0]:
                ok, data = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
                self._jpeg = (frame.seq, data.tobytes() if ok else b"")
            return self._jpeg

    def describe(self, index: int) -> Dict[str, Any]:
        """The source's entry of ``/stats``."""
        update, frame, ended = self.update, self.frame, self.ended
        entry: Dict[str, Any] = {"index": index, "name": self.name, "seq": -1 if frame is None else frame.seq,
                                 "state": "waiting", "reason": "", "age_s": None, "stats": {}, "record": None}
        if update is not None:
            stats, record, when = update
            age = time.monotonic() - when
            entry.update(age_s=round(age, 2), stats=stats, record=record, state=stats.get("state", "running"))
            if entry["state"] == "running" and age > STALL_AFTER:
                entry.update(state="stalled", reason="no frame for %.0f s" % age)
        if ended is not None:
            entry.update(state="ended", reason=ended)
        return entry


class LiveView:
    """A browser view of live sources; see the module docstring.

    ``sources``: the sources' names, in the order of the ``source`` indexes :meth:`publish` takes.
    ``host``/``port``: where to listen (port 0: any free port; :attr:`url` tells which). ``token``: when set,
    required on every request. ``jpeg_quality``: 1..100. ``max_fps``: the most images per second
    :meth:`wants_image` asks for per source. ``log``: called with one line per event.

    Drawing and encoding cost the loop time, so a loop asks :meth:`wants_image` first and passes the annotated
    image only when someone watches that source and the last image is ``1 / max_fps`` old:

        with LiveView(["cam0", "cam1"], port=8080) as view:
            print("view at", view.url)
            ...
            canvas = draw_overlay(image, frame, fps) if view.wants_image(0) else None
            view.publish(0, canvas, {"fps": fps, "persons": len(frame.ids), "timings_ms": frame.timings,
                                     "frames": n, "state": "running"}, frame.record())
    """

    def __init__(self, sources: Sequence[str], host: str = "127.0.0.1", port: int = 8080,
                 token: Optional[str] = None, jpeg_quality: int = 80, max_fps: float = 15.0,
                 log: Callable[[str], None] = lambda line: None) -> None:
        if not sources:
            raise InputError("the view needs at least one source")
        if not 1 <= int(jpeg_quality) <= 100 or not 0 <= int(port) <= 65535:
            raise InputError("jpeg_quality must be 1..100 and port 0..65535, got %r and %r" % (jpeg_quality, port))
        if not max_fps > 0:
            raise InputError("max_fps must be > 0, got %r" % max_fps)
        check_view_binding(host, token)
        self.host, self.port, self.token = host, int(port), token
        self.jpeg_quality = int(jpeg_quality)
        self.min_interval = 1.0 / float(max_fps)
        self.log = log
        self._sources = [_Source(str(name)) for name in sources]
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._closed = threading.Event()

    def start(self) -> "LiveView":
        """Listen and serve in background threads; an address that cannot be bound raises :class:`InputError`."""
        if self._server is not None:
            return self
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            self._server = _Server((self.host, self.port), self, family)
        except OSError as e:
            busy = " (port %d is in use: pick another, or 0 for any free port)" % self.port \
                if e.errno == errno.EADDRINUSE else ""
            raise InputError("cannot serve the view on %s:%d: %s%s" % (self.host, self.port, e.strerror or e, busy))
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="edgepose-view", daemon=True)
        self._thread.start()
        self.log("live view at %s%s" % (self._address(), " (add ?token=... with the --view-token)"
                                         if self.token else ""))
        return self

    def _address(self) -> str:
        return "http://%s:%d/" % ("[%s]" % self.host if ":" in self.host else self.host, self.port)

    @property
    def url(self) -> str:
        """The page's address, with the token when one is set."""
        return self._address() + ("?token=%s" % quote(self.token, safe="") if self.token else "")

    def wants_image(self, source: int) -> bool:
        """Whether someone watches ``source``'s video and its last image is at least ``1 / max_fps`` old: when
        not, :meth:`publish` it without an image and save drawing it. O(1)."""
        slot = self._slot(source)
        now = time.monotonic()
        watched = slot.viewers > 0 or now < slot.snapshot_until
        return watched and (slot.frame is None or now - slot.frame.time >= self.min_interval)

    def publish(self, source: int, image: Optional[np.ndarray], stats: dict, record: dict) -> None:
        """Make ``stats`` (fps, persons, timings_ms, frames, state "running" or "stalled"), ``record`` (the frame's
        JSON object) and ``image`` (the annotated BGR frame, kept by reference: do not modify it afterwards; None
        keeps the previous image) the latest of ``source``. O(1): encoding happens in the viewers' threads, and
        images a viewer had no time for are dropped."""
        if image is not None and (not isinstance(image, np.ndarray) or image.dtype != np.uint8
                                  or image.ndim not in (2, 3)):
            raise InputTypeError("publish() takes a uint8 BGR image (H, W, 3) or None, got %r"
                                 % (getattr(image, "dtype", type(image)),))
        slot = self._slot(source)
        with slot.changed:
            slot.update = (stats, record, time.monotonic())
            if image is not None:
                slot.frame = _Frame(slot.frame.seq + 1 if slot.frame is not None else 0, image)
                slot.changed.notify_all()

    def source_ended(self, source: int, reason: str) -> None:
        """Show ``source`` as ended with ``reason``; its stream ends after its last frame."""
        slot = self._slot(source)
        with slot.changed:
            slot.ended = str(reason) or "ended"
            slot.changed.notify_all()

    def _slot(self, source: int) -> _Source:
        if not 0 <= source < len(self._sources):
            raise InputError("source %r is not one of the view's %d sources" % (source, len(self._sources)))
        return self._sources[source]

    def stats(self) -> Dict[str, Any]:
        """What ``/stats`` answers: an entry per source."""
        return {"sources": [slot.describe(i) for i, slot in enumerate(self._sources)]}

    def close(self) -> None:
        """Stop serving and drop every viewer connection; returns once the server's threads have ended."""
        if self._closed.is_set():
            return
        self._closed.set()
        for slot in self._sources:
            with slot.changed:
                slot.changed.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.drop_connections()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def __enter__(self) -> "LiveView":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Server(HTTPServer):
    """An HTTP server with one named thread per connection, all of them tracked so that close() ends them."""

    daemon_threads = True

    def __init__(self, address: Tuple[str, int], view: LiveView, family: int) -> None:
        self.address_family = family
        self.view = view
        self._lock = threading.Lock()
        self._connections: Dict[threading.Thread, socket.socket] = {}
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also resolves the host name (getfqdn), which can take seconds offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        if self.view._closed.is_set():
            self.shutdown_request(request)
            return
        thread = threading.Thread(target=self._serve, args=(request, client_address), name="edgepose-view-conn",
                                  daemon=True)
        with self._lock:
            self._connections[thread] = request
        thread.start()

    def _serve(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - a viewer that went away; the view goes on
            pass
        finally:
            self.shutdown_request(request)
            with self._lock:
                self._connections.pop(threading.current_thread(), None)

    def drop_connections(self, timeout: float = 5.0) -> None:
        """Shut down every viewer's socket (a blocked write fails at once) and wait for their threads."""
        with self._lock:
            connections = list(self._connections.items())
        for _, request in connections:
            try:
                request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for thread, _ in connections:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    """``/`` the page, ``/stats`` JSON, ``/stream/N`` MJPEG of source N."""

    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive for the page's stats polling
    timeout = WRITE_TIMEOUT
    server_version = "edgepose-view"

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        view = self.server.view
        url = urlsplit(self.path)
        refusal = self._refusal(view, parse_qs(url.query).get("token", [""])[0])
        if refusal:
            self._send(403, "text/plain; charset=utf-8", refusal.encode())
        elif url.path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", PAGE.encode())
        elif url.path == "/stats":
            self._send(200, "application/json", json.dumps(view.stats(), default=_plain).encode())
        elif url.path.startswith(("/stream/", "/frame/")) and self._source(view, url.path) is not None:
            slot = self._source(view, url.path)
            if url.path.startswith("/stream/"):
                self._stream(view, slot)
                return
            slot.snapshot_until = time.monotonic() + SNAPSHOT_INTEREST
            if slot.frame is None:
                self._send(404, "text/plain; charset=utf-8", b"no frame yet\n")
            else:
                self._send(200, "image/jpeg", slot.jpeg(view.jpeg_quality)[1])
        else:
            self._send(404, "text/plain; charset=utf-8",
                       b"not found: the view serves /, /stats, /stream/N (MJPEG) and /frame/N (JPEG)\n")

    @staticmethod
    def _source(view: LiveView, path: str) -> Optional[_Source]:
        """The source that ``path`` (``/stream/N``, ``/frame/N``) names, or None."""
        index = path.rpartition("/")[2]
        return view._sources[int(index)] if _PORT.fullmatch(index) and int(index) < len(view._sources) else None

    def _refusal(self, view: LiveView, token: str) -> str:
        """Why this request is refused, or ``""``."""
        if view.token is not None:
            if not hmac.compare_digest(token.encode(), view.token.encode()):
                return "forbidden: this view needs its token; open the URL with ?token=... that edgepose printed\n"
            return ""
        host = urlsplit("//" + (self.headers.get("Host") or "")).hostname or ""
        if not (_is_loopback(host) or host == view.host):
            return "forbidden: the view answers requests to %s only (Host: %s)\n" % (view.host, host)
        return ""

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self._common_headers()
        self.end_headers()
        self.wfile.write(body)

    def _common_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")

    def _stream(self, view: LiveView, slot: _Source) -> None:
        """MJPEG: the newest frame each time one was published, until the source ends or the view closes."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=%s" % _BOUNDARY)
        self._common_headers()
        self.send_header("Connection", "close")
        self.end_headers()
        # Each image is followed at once by the boundary and headers of the next part: a browser shows a part only
        # once the next one has begun (so the parts carry no Content-Length, which is not known that early).
        part = b"\r\n--%s\r\nContent-Type: image/jpeg\r\n\r\n" % _BOUNDARY.encode()
        self.wfile.write(part[2:])
        with slot.changed:
            slot.viewers += 1
        try:
            sent = -1
            while not view._closed.is_set():
                with slot.changed:
                    slot.changed.wait_for(lambda: view._closed.is_set() or slot.ended is not None
                                          or (slot.frame is not None and slot.frame.seq != sent), timeout=1.0)
                    fresh = slot.frame is not None and slot.frame.seq != sent
                    ended = slot.ended is not None
                if view._closed.is_set():
                    break
                if fresh:
                    sent, jpeg = slot.jpeg(view.jpeg_quality)
                    self.wfile.write(jpeg + part)
                elif ended:
                    break
        finally:
            with slot.changed:
                slot.viewers -= 1

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        """Silent: request lines would carry the token."""


def _plain(value: Any) -> Any:
    """NumPy scalars and arrays in stats or records as plain JSON values."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError("%s is not JSON serializable" % type(value).__name__)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>edgepose live view</title>
<style>
body{margin:0;font:14px/1.4 system-ui,sans-serif;background:#15171a;color:#e6e6e6}
header{padding:8px 16px;background:#23262b;display:flex;gap:16px;align-items:baseline}
header h1{font-size:16px;margin:0}#status{color:#9aa0a6}
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px;padding:12px}
.card{background:#1e2125;border-radius:6px;padding:8px;border:2px solid transparent}
.card.ended{opacity:.75;border-color:#8a3b3b}.card.stalled{border-color:#b58a1b}
.title{display:flex;justify-content:space-between;align-items:center;gap:8px;margin-bottom:6px}
.name{font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.badge{padding:1px 8px;border-radius:10px;font-size:12px;background:#2d6a3e;white-space:nowrap;max-width:60%;
overflow:hidden;text-overflow:ellipsis;flex-shrink:0}
.ended .badge{background:#8a3b3b}.stalled .badge{background:#b58a1b}.waiting .badge{background:#555}
img{width:100%;background:#000;display:block;min-height:60px}
.stats{margin:6px 0;font-variant-numeric:tabular-nums}.stages{color:#9aa0a6}
pre{max-height:160px;overflow:auto;background:#111;padding:6px;margin:0;font-size:11px}
</style></head><body>
<header><h1>edgepose live view</h1><span id="status">connecting...</span></header>
<div id="grid"></div>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token");
const q = token === null ? "" : "?token=" + encodeURIComponent(token);
const cards = [];
// Browsers open at most 6 connections per server: MJPEG for the first 5 sources, JPEG snapshots for the rest.
const MAX_STREAMS = 5;
function el(tag, cls, parent) {
  const e = document.createElement(tag); if (cls) e.className = cls; if (parent) parent.appendChild(e); return e;
}
function build(src) {
  const card = el("div", "card waiting", document.getElementById("grid"));
  card.id = "source-" + src.index;
  const title = el("div", "title", card);
  el("span", "name", title).textContent = src.index + ": " + src.name;
  const c = {card: card, badge: el("span", "badge", title), img: el("img", "", card),
             stats: el("div", "stats", card), stages: el("div", "stages", card), streaming: false, opened: false};
  c.img.alt = "video of source " + src.index;
  c.img.onerror = () => { c.streaming = false; };  // a dropped stream is opened again on the next poll
  const details = el("details", "", card); details.open = true;
  el("summary", "", details).textContent = "latest JSON record";
  c.record = el("pre", "record", details);
  return c;
}
function show(c, src) {
  c.card.className = "card " + src.state;
  c.badge.textContent = c.badge.title = src.state + (src.reason ? ": " + src.reason : "");
  if (src.index < MAX_STREAMS) {
    // The stream of a running source is (re)opened; an ended one's once, for its last image.
    if (!c.streaming && (src.state !== "ended" || (src.seq >= 0 && !c.opened))) {
      c.img.src = "stream/" + src.index + q; c.streaming = c.opened = true;
    }
  } else if (src.state !== "ended" || src.seq !== c.seq) {
    // Asking for a snapshot also tells the view that someone watches this source.
    const next = new Image();
    next.onload = () => { c.img.src = next.src; };
    next.src = "frame/" + src.index + (q ? q + "&" : "?") + "seq=" + src.seq + "&t=" + Date.now();
  }
  c.seq = src.seq;
  const s = src.stats || {};
  if (src.age_s !== null) {
    const persons = s.persons === undefined ? "?" : s.persons;
    c.stats.textContent = (s.fps || 0).toFixed(1) + " fps \\u00b7 " + persons + (persons === 1 ? " person" : " persons")
      + " \\u00b7 frame " + (s.frames === undefined ? "?" : s.frames);
    const t = s.timings_ms || {};
    c.stages.textContent = Object.keys(t).map(k => k + " " + Number(t[k]).toFixed(1)).join(" \\u00b7 ") + " ms";
    c.record.textContent = JSON.stringify(src.record, null, 1);
  } else {
    c.stats.textContent = "waiting for the first frame";
  }
}
async function poll() {
  try {
    const r = await fetch("stats" + q, {cache: "no-store"});
    if (!r.ok) throw new Error(r.status + " " + (await r.text()));
    const data = await r.json();
    data.sources.forEach((src, i) => { if (!cards[i]) cards[i] = build(src); show(cards[i], src); });
    document.getElementById("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById("status").textContent = "view unreachable: " + e.message;
  }
  setTimeout(poll, 500);
}
poll();
</script></body></html>
"""
