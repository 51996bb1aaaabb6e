"""A real HTTP server on 127.0.0.1 for download tests: serves a folder; per-path scripts misbehave
(or answer POST requests, e.g. as a scripted Triton server).

Standard library only (the Python 3.8 runtime venv imports it). The ``server`` fixture in conftest.py
gives one per test.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

STALL_LIMIT_S = 10.0  # a stalled handler never waits longer than this, even if a test fails


class LocalServer:
    """Serves ``root`` at ``url`` (ephemeral port, ends in '/'); ``scripts`` override single paths,
    ``hits`` lists the paths asked for. Stop it with ``stop()`` or use it as a context manager."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hits: list[str] = []
        self.scripts: dict[str, Callable[[SimpleHTTPRequestHandler], None]] = {}
        self.release = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
        self._httpd.owner = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.running = False
            self.release.set()
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        if not self._scripted():
            super().do_GET()

    def do_POST(self) -> None:
        """Only scripted paths take POST requests (the script reads the body); others get 501."""
        if not self._scripted():
            self.send_error(501, "POST is only scripted")

    def _scripted(self) -> bool:
        owner: LocalServer = self.server.owner  # type: ignore[attr-defined]
        owner.hits.append(self.path)
        script = owner.scripts.get(self.path)
        if script:
            script(self)
        return script is not None

    def log_message(self, *args: object) -> None:
        """Keep test output quiet."""


def _send_part(handler: SimpleHTTPRequestHandler, size: int) -> None:
    """Announce 1000 bytes and send the first ``size``."""
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    handler.wfile.write(b"x" * size)
    handler.wfile.flush()


def send_truncated(handler: SimpleHTTPRequestHandler) -> None:
    """Announce 1000 bytes, send 100, close the connection."""
    _send_part(handler, 100)
    handler.close_connection = True


def send_stalled(handler: SimpleHTTPRequestHandler) -> None:
    """Announce 1000 bytes, send 10, then go silent until the server stops."""
    _send_part(handler, 10)
    handler.server.owner.release.wait(STALL_LIMIT_S)  # type: ignore[attr-defined]
    handler.close_connection = True
