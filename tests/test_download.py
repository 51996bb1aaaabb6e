"""edgepose.cache and edgepose.download against a real HTTP server on 127.0.0.1 (conftest's ``server``)."""
import hashlib
import io
import os
import stat
import sys
import time
from pathlib import Path

import pytest
from loopback import LocalServer, send_stalled, send_truncated
from support import leftovers, write_zip

from edgepose.cache import cache_dir
from edgepose.download import download, extract_zip_member, hash_matches
from edgepose.errors import DownloadError, InputError
from edgepose.fileio import file_hash


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


def assert_usual_permissions(path: Path) -> None:
    """A downloaded file has the permissions of any new file (0666 less the umask), not mkstemp's 0600."""
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


# --- download --------------------------------------------------------------------------------

def test_download_checks_hashes_and_places_file(payload_url: str, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "data.bin"
    got = download(payload_url, dest, sha1=PAYLOAD_SHA1[:8], sha256=PAYLOAD_SHA256,
                   progress=False)
    assert got == dest and dest.read_bytes() == PAYLOAD
    assert leftovers(dest.parent) == ["data.bin"]
    assert_usual_permissions(dest)


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
    assert_usual_permissions(dest)


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
