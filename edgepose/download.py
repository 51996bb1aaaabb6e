"""Stdlib-only downloads: stream to a temp file, show progress, check the hash, rename into place.

Nothing half-written is ever left at the destination: every failure removes the temp file and
raises :class:`~edgepose.errors.DownloadError` with the URL, the cause and what to do.
"""
import hashlib
import http.client
import socket
import sys
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Dict, Iterator, Optional, TextIO

from edgepose import __version__
from edgepose.errors import DownloadError
from edgepose.fileio import PathLike, atomic_output

__all__ = ["download", "extract_zip_member", "hash_matches"]

_CHUNK = 1 << 16
_MB = 1e6


def hash_matches(actual: str, expected: str) -> bool:
    """True if ``actual`` starts with ``expected`` (case-insensitive), like GluonCV's check.

    An 8-hex hashtag therefore checks only the first 8 digits; an empty ``expected`` never matches.
    """
    expected = expected.strip().lower()
    return bool(expected) and actual.lower()[: len(expected)] == expected


def download(
    url: str,
    dest: PathLike,
    *,
    sha1: Optional[str] = None,
    sha256: Optional[str] = None,
    timeout: float = 15.0,
    progress: bool = True,
    hint: Optional[str] = None,
) -> Path:
    """Download ``url`` to ``dest`` atomically and return ``dest``.

    ``sha1``/``sha256`` may be hex prefixes (an 8-hex GluonCV hashtag works). ``timeout`` bounds
    the connection and every read, so a dead or stalled server fails in about that time.
    ``hint`` is appended to every error message (e.g. how to get the file offline).
    """
    dest = Path(dest)
    expected = {algo: value for algo, value in (("sha1", sha1), ("sha256", sha256)) if value}
    try:
        with atomic_output(dest, ".part") as out:
            digests = _fetch(url, out, expected, timeout, progress, hint)
            _check_digests(f"download of {url}", digests, expected, hint)
    except DownloadError:
        raise
    except OSError as exc:
        raise DownloadError(_message(f"could not save {url} to {dest}: {exc}", "check the "
                                     "folder is writable and the disk has space", hint)) from exc
    return dest


def extract_zip_member(
    zip_path: PathLike, member_name: str, dest: PathLike, *, sha1: Optional[str] = None
) -> Path:
    """Extract one file of a zip archive to ``dest`` atomically and return ``dest``.

    ``member_name`` must be a relative path inside the archive (no ``..``, no absolute path).
    If ``sha1`` (full or prefix) is given, the extracted bytes are checked before the rename.
    """
    dest = Path(dest)
    parts = PurePosixPath(member_name.replace("\\", "/"))
    if not member_name or parts.is_absolute() or ".." in parts.parts or ":" in member_name:
        raise DownloadError(f"refusing to extract {member_name!r} from {zip_path}: "
                            "not a plain relative path inside the archive")
    with atomic_output(dest, ".part") as out:
        digest = _copy_member(zip_path, member_name, out)
        if sha1:
            _check_digests(f"{member_name} in {zip_path}", {"sha1": digest}, {"sha1": sha1}, None)
    return dest


def _copy_member(zip_path: PathLike, member_name: str, out: BinaryIO) -> str:
    """Stream one zip member into ``out``; return its SHA-1."""
    digest = hashlib.sha1()
    try:
        with zipfile.ZipFile(zip_path) as archive:
            try:
                info = archive.getinfo(member_name)
            except KeyError:
                names = ", ".join(archive.namelist()[:10]) or "nothing"
                raise DownloadError(f"{zip_path} has no member {member_name!r} (it holds: "
                                    f"{names}); the archive is not the expected one") from None
            if info.is_dir():
                raise DownloadError(f"{member_name!r} in {zip_path} is a folder, not a file")
            with archive.open(info) as src:
                for chunk in iter(lambda: src.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DownloadError(f"{zip_path} is not a valid zip archive ({exc}); "
                            "delete it and download it again") from exc
    return digest.hexdigest()


def _fetch(
    url: str,
    out: BinaryIO,
    expected: Dict[str, str],
    timeout: float,
    progress: bool,
    hint: Optional[str],
) -> Dict[str, str]:
    """Stream ``url`` into ``out``; return hex digests of the algorithms in ``expected``."""
    digests = {algo: hashlib.new(algo) for algo in expected}
    with _open(url, timeout, hint) as response:
        total = _content_length(response)
        bar = _Progress(url, total) if progress and sys.stderr is not None else None
        received = 0
        try:
            for chunk in _chunks(response, url, timeout, hint):
                out.write(chunk)
                for digest in digests.values():
                    digest.update(chunk)
                received += len(chunk)
                if bar:
                    bar.update(len(chunk))
        finally:
            if bar:
                bar.close()
    if total is not None and received != total:
        raise DownloadError(_message(
            f"could not download {url}: the transfer was cut short after {received} of "
            f"{total} bytes", "the connection dropped; try again", hint))
    return {algo: digest.hexdigest() for algo, digest in digests.items()}


def _open(url: str, timeout: float, hint: Optional[str]) -> http.client.HTTPResponse:
    """Send the request; turn every failure into a DownloadError."""
    request = urllib.request.Request(url, headers={"User-Agent": f"edgepose/{__version__}"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise DownloadError(_message(
            f"could not download {url}: the server answered HTTP {exc.code} {exc.reason}",
            _http_advice(exc.code), hint)) from None
    except urllib.error.URLError as exc:
        raise _network_error(url, exc.reason, timeout, hint) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _network_error(url, exc, timeout, hint) from exc


def _chunks(
    response: http.client.HTTPResponse, url: str, timeout: float, hint: Optional[str]
) -> Iterator[bytes]:
    """Yield the body in chunks; a dropped or stalled connection becomes a DownloadError."""
    while True:
        try:
            chunk = response.read(_CHUNK)
        except (OSError, http.client.HTTPException) as exc:
            raise _network_error(url, exc, timeout, hint) from exc
        if not chunk:
            return
        yield chunk


def _content_length(response: http.client.HTTPResponse) -> Optional[int]:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _check_digests(
    what: str, actual: Dict[str, str], expected: Dict[str, str], hint: Optional[str]
) -> None:
    for algo, want in expected.items():
        if not hash_matches(actual[algo], want):
            shown = want.lower() + ("..." if len(want) < len(actual[algo]) else "")
            raise DownloadError(_message(
                f"checksum mismatch for {what}: expected {algo} {shown}, "
                f"got {actual[algo]}", "the file is corrupt or not the expected one and was "
                "not kept; try again, and if it persists the source has changed", hint))


def _network_error(url: str, reason: object, timeout: float, hint: Optional[str]) -> DownloadError:
    if isinstance(reason, (socket.timeout, TimeoutError)):
        cause = f"no answer within {timeout:g} s"
    else:
        cause = str(reason) or type(reason).__name__
    return DownloadError(_message(
        f"could not download {url}: the network could not be reached ({cause})",
        "check your connection or proxy settings, or fetch the file elsewhere and use it offline",
        hint))


def _http_advice(code: int) -> str:
    if code in (401, 403, 404, 410):
        return "the file is not available at this address; check the URL (or your mirror)"
    if code >= 500:
        return "the server has a problem; try again later"
    return "check the URL and try again"


def _message(problem: str, advice: str, hint: Optional[str]) -> str:
    return f"{problem}. {advice[0].upper()}{advice[1:]}." + (f" {hint}" if hint else "")


class _Progress:
    """A tiny progress bar on stderr: redrawn in place on a TTY, a few plain lines otherwise."""

    _REDRAW_S = 0.1

    def __init__(self, url: str, total: Optional[int]) -> None:
        self.stream: TextIO = sys.stderr
        self.total = total
        self.done = 0
        self.start = time.monotonic()
        self.tty = _isatty(self.stream)
        self._last_draw = 0.0
        self._quarter = 0
        self._write(f"Downloading {url}\n")

    def update(self, n: int) -> None:
        self.done += n
        if self.tty:
            now = time.monotonic()
            if now - self._last_draw >= self._REDRAW_S:
                self._last_draw = now
                self._write(f"\r{self._status()}")
        elif self.total:
            quarter = 4 * self.done // self.total
            if self._quarter < quarter < 4:
                self._quarter = quarter
                self._write(f"{self._status()}\n")

    def close(self) -> None:
        self._write(f"\r{self._status()}\n" if self.tty else f"{self._status()}\n")

    def _status(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        done = self.done / _MB
        rate = f"{done / elapsed:.1f} MB/s"
        if self.total:
            percent = 100 * self.done / self.total
            return f"  {percent:3.0f}%  {done:.1f}/{self.total / _MB:.1f} MB  {rate}"
        return f"  {done:.1f} MB  {rate}"

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False

