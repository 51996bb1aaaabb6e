"""edgepose.cache and edgepose.download against a real HTTP server on 127.0.0.1.

The server helpers here are also used by test_weights.py.
"""
import hashlib
import io
import socket
import sys
import threading
import time
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest

from edgepose.cache import cache_dir
from edgepose.download import download, extract_zip_member, file_hash, hash_matches
from edgepose.errors import DownloadError, InputError

Script = Callable[[SimpleHTTPRequestHandler], None]
STALL_LIMIT_S = 10.0  # a stalled handler never waits longer than this, even if a test fails


class LocalServer:
    """Serves a folder on 127.0.0.1 (ephemeral port); ``scripts`` override single paths."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hits: List[str] = []
        self.scripts: Dict[str, Script] = {}
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


class _Handler(SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        owner: LocalServer = self.server.owner  # type: ignore[attr-defined]
        owner.hits.append(self.path)
        script = owner.scripts.get(self.path)
        if script:
            script(self)
        else:
            super().do_GET()

    def log_message(self, *args: object) -> None:
        """Keep test output quiet."""


def send_truncated(handler: SimpleHTTPRequestHandler) -> None:
    """Announce 1000 bytes, send 100, close the connection."""
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    handler.wfile.write(b"x" * 100)
    handler.wfile.flush()
    handler.close_connection = True


def send_stalled(handler: SimpleHTTPRequestHandler) -> None:
    """Send headers and a few bytes, then go silent until the server stops."""
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    handler.wfile.write(b"x" * 10)
    handler.wfile.flush()
    handler.server.owner.release.wait(STALL_LIMIT_S)  # type: ignore[attr-defined]
    handler.close_connection = True


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib honours *_proxy variables; loopback traffic must never go through a proxy."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    root = tmp_path / "www"
    root.mkdir()
    srv = LocalServer(root)
    yield srv
    srv.stop()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def leftovers(folder: Path) -> List[str]:
    """Every entry in ``folder``, hidden temp files included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def write_zip(path: Path, members: Dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


class TtyBuffer(io.StringIO):
    def isatty(self) -> bool:
        return True


PAYLOAD = bytes(range(256)) * 2000  # 512 kB: several chunks
PAYLOAD_SHA1 = hashlib.sha1(PAYLOAD).hexdigest()
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def payload_url(server: LocalServer) -> str:
    (server.root / "data.bin").write_bytes(PAYLOAD)
    return server.url + "data.bin"


# --- cache_dir -------------------------------------------------------------------------------

def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EDGEPOSE_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir("weights") == tmp_path / "home" / ".cache" / "edgepose" / "weights"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert cache_dir("weights") == tmp_path / "home" / ".cache" / "edgepose" / "weights"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("engines") == tmp_path / "xdg" / "edgepose" / "engines"
    monkeypatch.setenv("EDGEPOSE_HOME", str(tmp_path / "ep"))
    path = cache_dir("weights")
    assert path == tmp_path / "ep" / "weights" and path.is_dir()


@pytest.mark.parametrize("kind", ["", "..", "a/b", "a\\b"])
def test_cache_dir_rejects_paths(kind: str, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPOSE_HOME", str(tmp_path))
    with pytest.raises(InputError):
        cache_dir(kind)


# --- hashes ----------------------------------------------------------------------------------

def test_file_hash_and_prefix_match(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    assert file_hash(path) == PAYLOAD_SHA1
    assert file_hash(path, "sha256") == PAYLOAD_SHA256
    assert hash_matches(PAYLOAD_SHA1, PAYLOAD_SHA1[:8].upper())
    assert not hash_matches(PAYLOAD_SHA1, "")
    assert not hash_matches(PAYLOAD_SHA1, "0" * 8 if PAYLOAD_SHA1[0] != "0" else "1" * 8)


# --- download --------------------------------------------------------------------------------

def test_download_checks_hashes_and_places_file(payload_url: str, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "data.bin"
    got = download(payload_url, dest, sha1=PAYLOAD_SHA1[:8], sha256=PAYLOAD_SHA256,
                   progress=False)
    assert got == dest and dest.read_bytes() == PAYLOAD
    assert leftovers(dest.parent) == ["data.bin"]


def test_download_checksum_mismatch_leaves_nothing(payload_url: str, tmp_path: Path) -> None:
    wrong = "0" * 40 if PAYLOAD_SHA1[0] != "0" else "1" * 40
    with pytest.raises(DownloadError) as err:
        download(payload_url, tmp_path / "data.bin", sha1=wrong, progress=False)
    message = str(err.value)
    assert "checksum mismatch" in message and wrong in message and PAYLOAD_SHA1 in message
    assert payload_url in message
    assert leftovers(tmp_path) == ["www"]


def test_download_404_names_url(server: LocalServer, tmp_path: Path) -> None:
    url = server.url + "missing.bin"
    with pytest.raises(DownloadError) as err:
        download(url, tmp_path / "out" / "missing.bin", progress=False, hint="HINT")
    assert url in str(err.value) and "404" in str(err.value)
    assert str(err.value).endswith("HINT")
    assert leftovers(tmp_path / "out") == []


def test_download_truncated_body(server: LocalServer, tmp_path: Path) -> None:
    server.scripts["/short.bin"] = send_truncated
    with pytest.raises(DownloadError) as err:
        download(server.url + "short.bin", tmp_path / "out" / "short.bin", progress=False)
    assert "cut short after 100 of 1000 bytes" in str(err.value)
    assert leftovers(tmp_path / "out") == []


def test_download_connection_refused_fails_fast(closed_port: int, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port}/x.bin"
    start = time.monotonic()
    with pytest.raises(DownloadError) as err:
        download(url, tmp_path / "x.bin", progress=False, hint="Use the offline route.")
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert url in message and "network could not be reached" in message
    assert message.endswith("Use the offline route.")
    assert leftovers(tmp_path) == []


def test_download_stalled_server_times_out(server: LocalServer, tmp_path: Path) -> None:
    server.scripts["/stall.bin"] = send_stalled
    start = time.monotonic()
    with pytest.raises(DownloadError) as err:
        download(server.url + "stall.bin", tmp_path / "stall.bin", timeout=1, progress=False)
    assert time.monotonic() - start < 4
    assert "no answer within 1 s" in str(err.value)
    assert leftovers(tmp_path) == ["www"]


def test_progress_plain_lines_when_not_a_tty(payload_url: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    download(payload_url, tmp_path / "a.bin")
    err = capsys.readouterr().err
    assert err.startswith(f"Downloading {payload_url}\n")
    assert "\r" not in err and "100%" in err and "MB/s" in err
    assert 2 <= err.count("\n") <= 5
    download(payload_url, tmp_path / "b.bin", progress=False)
    assert capsys.readouterr().err == ""


def test_progress_redraws_on_a_tty(payload_url: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    stream = TtyBuffer()
    monkeypatch.setattr(sys, "stderr", stream)
    download(payload_url, tmp_path / "a.bin")
    text = stream.getvalue()
    assert "\r" in text and text.endswith("\n") and "100%" in text.rsplit("\r", 1)[1]


# --- extract_zip_member ----------------------------------------------------------------------

def test_extract_member_atomically(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", {"w.params": PAYLOAD, "other.txt": b"x"})
    dest = tmp_path / "out" / "w.params"
    assert extract_zip_member(archive, "w.params", dest, sha1=PAYLOAD_SHA1) == dest
    assert dest.read_bytes() == PAYLOAD and leftovers(dest.parent) == ["w.params"]


def test_extract_member_hash_mismatch_leaves_nothing(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", {"w.params": b"not the weights"})
    with pytest.raises(DownloadError, match="checksum mismatch"):
        extract_zip_member(archive, "w.params", tmp_path / "out" / "w.params", sha1=PAYLOAD_SHA1)
    assert leftovers(tmp_path / "out") == []


@pytest.mark.parametrize("member", ["../evil.params", "/abs.params", "a/../../b", "C:evil"])
def test_extract_rejects_path_traversal(member: str, tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", {"w.params": b"x"})
    with pytest.raises(DownloadError, match="refusing to extract"):
        extract_zip_member(archive, member, tmp_path / "out" / "w.params")


def test_extract_missing_member_and_bad_zip(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", {"w.params": b"x"})
    with pytest.raises(DownloadError, match="no member 'v.params'.*w.params"):
        extract_zip_member(archive, "v.params", tmp_path / "out" / "v.params")
    not_zip = tmp_path / "b.zip"
    not_zip.write_bytes(b"<html>not a zip</html>")
    with pytest.raises(DownloadError, match="not a valid zip"):
        extract_zip_member(not_zip, "w.params", tmp_path / "out" / "w.params")
    assert leftovers(tmp_path / "out") == []
