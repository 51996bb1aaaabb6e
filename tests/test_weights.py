"""converters.weights: resolving GluonCV weights through a fake model store on 127.0.0.1 (conftest's ``server``)."""
import hashlib
import logging
import time
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest
from loopback import LocalServer, send_stalled, send_truncated
from support import leftovers, write_zip

from edgepose.converters.weights import (
    DEFAULT_GLUON_REPO, gluoncv_cache_dirs, gluoncv_store_url, resolve_weights,
)
from edgepose.errors import DownloadError, InputError, ModelFileError

MODEL = "simple_pose_resnet18_v1b"
CONTENT = b"fake GluonCV parameters\n" * 4096
SHA1 = hashlib.sha1(CONTENT).hexdigest()
TAG = SHA1[:8]
NAME = f"{MODEL}-{TAG}.params"
ZIP_PATH = f"/gluon/models/{MODEL}-{TAG}.zip"


class Homes(NamedTuple):
    mxnet_models: Path
    own: Path


@pytest.fixture
def homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Homes:
    """Point GluonCV's and edgepose's caches at empty temp folders."""
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet"))
    monkeypatch.setenv("EDGEPOSE_HOME", str(tmp_path / "edgepose"))
    return Homes(tmp_path / "mxnet" / "models", tmp_path / "edgepose" / "weights")


@pytest.fixture
def store(server: LocalServer, homes: Homes, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[LocalServer]:
    """A model store with one zip, served as $MXNET_GLUON_REPO (given without trailing '/')."""
    write_zip(server.root / ZIP_PATH.lstrip("/"), {NAME: CONTENT})
    monkeypatch.setenv("MXNET_GLUON_REPO", server.url.rstrip("/"))
    yield server


@pytest.fixture
def offline(closed_port: int, homes: Homes, monkeypatch: pytest.MonkeyPatch) -> str:
    """A model store nobody answers at; returns the URL the zip would have."""
    monkeypatch.setenv("MXNET_GLUON_REPO", f"http://127.0.0.1:{closed_port}/")
    return gluoncv_store_url(MODEL, TAG)


# --- locations -------------------------------------------------------------------------------

def test_store_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MXNET_GLUON_REPO", raising=False)
    assert gluoncv_store_url("mobile_pose_mobilenet1.0", "b399bac7") == (
        DEFAULT_GLUON_REPO + "gluon/models/mobile_pose_mobilenet1.0-b399bac7.zip")
    monkeypatch.setenv("MXNET_GLUON_REPO", "http://mirror/x")
    assert gluoncv_store_url(MODEL, TAG) == f"http://mirror/x/gluon/models/{MODEL}-{TAG}.zip"
    monkeypatch.setenv("MXNET_GLUON_REPO", "http://mirror/x/")
    assert gluoncv_store_url(MODEL, TAG) == f"http://mirror/x/gluon/models/{MODEL}-{TAG}.zip"


def test_gluoncv_cache_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MXNET_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert gluoncv_cache_dirs() == [tmp_path / ".mxnet" / "models"]
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mx"))
    assert gluoncv_cache_dirs() == [tmp_path / "mx" / "models"]


# --- download path ---------------------------------------------------------------------------

def test_downloads_extracts_and_then_uses_cache(store: LocalServer, homes: Homes) -> None:
    path = resolve_weights(MODEL, TAG, SHA1, progress=False)
    assert path == homes.own / NAME and path.read_bytes() == CONTENT
    assert leftovers(homes.own) == [NAME]  # zip and temp files are gone
    assert store.hits == [ZIP_PATH]
    assert resolve_weights(MODEL, TAG, SHA1, progress=False) == path
    assert store.hits == [ZIP_PATH]
    store.stop()
    assert resolve_weights(MODEL, TAG, None, progress=False) == path


def test_hashtag_only_variant(store: LocalServer, homes: Homes) -> None:
    assert resolve_weights(MODEL, TAG, None, progress=False).read_bytes() == CONTENT


def test_progress_on_stderr(store: LocalServer, capfd: pytest.CaptureFixture) -> None:
    resolve_weights(MODEL, TAG, SHA1)
    err = capfd.readouterr().err
    assert f"Downloading {gluoncv_store_url(MODEL, TAG)}" in err and "100%" in err


def test_wrong_content_in_zip_leaves_nothing(store: LocalServer, homes: Homes) -> None:
    write_zip(store.root / ZIP_PATH.lstrip("/"), {NAME: b"something else"})
    with pytest.raises(DownloadError) as err:
        resolve_weights(MODEL, TAG, SHA1, progress=False)
    assert "checksum mismatch" in str(err.value) and SHA1 in str(err.value)
    assert gluoncv_store_url(MODEL, TAG) in str(err.value)
    assert leftovers(homes.own) == []


def test_missing_member_in_zip(store: LocalServer, homes: Homes) -> None:
    write_zip(store.root / ZIP_PATH.lstrip("/"), {"other.params": CONTENT})
    with pytest.raises(DownloadError, match="no member"):
        resolve_weights(MODEL, TAG, SHA1, progress=False)
    assert leftovers(homes.own) == []


def test_404_names_url(store: LocalServer, homes: Homes) -> None:
    (store.root / ZIP_PATH.lstrip("/")).unlink()
    with pytest.raises(DownloadError) as err:
        resolve_weights(MODEL, TAG, SHA1, progress=False)
    assert gluoncv_store_url(MODEL, TAG) in str(err.value) and "404" in str(err.value)
    assert leftovers(homes.own) == []


def test_truncated_zip_leaves_nothing(store: LocalServer, homes: Homes) -> None:
    store.scripts[ZIP_PATH] = send_truncated
    with pytest.raises(DownloadError, match="cut short"):
        resolve_weights(MODEL, TAG, SHA1, progress=False)
    assert leftovers(homes.own) == []


def test_stalled_store_times_out(store: LocalServer, homes: Homes) -> None:
    store.scripts[ZIP_PATH] = send_stalled
    start = time.monotonic()
    with pytest.raises(DownloadError, match="no answer within 1 s"):
        resolve_weights(MODEL, TAG, SHA1, progress=False, timeout=1)
    assert time.monotonic() - start < 4
    assert leftovers(homes.own) == []


def test_offline_fails_fast_with_advice(offline: str, homes: Homes) -> None:
    start = time.monotonic()
    with pytest.raises(DownloadError) as err:
        resolve_weights(MODEL, TAG, SHA1, progress=False)
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert f"could not download {offline}" in message
    assert "--weights FILE" in message and NAME in message and "--random-weights" in message
    assert str(homes.mxnet_models) in message
    assert leftovers(homes.own) == []


def test_download_disabled(offline: str) -> None:
    with pytest.raises(ModelFileError, match="downloading is disabled.*--weights FILE"):
        resolve_weights(MODEL, TAG, SHA1, download=False)


# --- caches and explicit files ---------------------------------------------------------------

def test_gluoncv_cache_hit_needs_no_server(offline: str, homes: Homes) -> None:
    homes.mxnet_models.mkdir(parents=True)
    (homes.mxnet_models / NAME).write_bytes(CONTENT)
    assert resolve_weights(MODEL, TAG, SHA1) == homes.mxnet_models / NAME
    assert resolve_weights(MODEL, TAG, None) == homes.mxnet_models / NAME


def test_bad_gluoncv_file_is_skipped_not_deleted(store: LocalServer, homes: Homes,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    homes.mxnet_models.mkdir(parents=True)
    (homes.mxnet_models / NAME).write_bytes(b"corrupt")
    with caplog.at_level(logging.WARNING):
        path = resolve_weights(MODEL, TAG, SHA1, progress=False)
    assert path == homes.own / NAME and path.read_bytes() == CONTENT
    assert (homes.mxnet_models / NAME).read_bytes() == b"corrupt"
    assert any(str(homes.mxnet_models / NAME) in r.getMessage() for r in caplog.records)


def test_bad_own_cache_file_is_replaced(store: LocalServer, homes: Homes) -> None:
    homes.own.mkdir(parents=True)
    (homes.own / NAME).write_bytes(b"corrupt")
    assert resolve_weights(MODEL, TAG, SHA1, progress=False).read_bytes() == CONTENT
    assert store.hits == [ZIP_PATH]


def test_explicit_path_wins(offline: str, homes: Homes, tmp_path: Path) -> None:
    homes.mxnet_models.mkdir(parents=True)
    (homes.mxnet_models / NAME).write_bytes(CONTENT)
    mine = tmp_path / "finetuned.params"
    mine.write_bytes(b"user weights, not checked")
    assert resolve_weights(MODEL, TAG, SHA1, str(mine)) == mine
    with pytest.raises(ModelFileError, match="does not exist"):
        resolve_weights(MODEL, TAG, SHA1, tmp_path / "nope.params")
    with pytest.raises(ModelFileError, match="is a folder"):
        resolve_weights(MODEL, TAG, SHA1, tmp_path)


@pytest.mark.parametrize("model, tag, sha1", [
    (MODEL, "F63D42AC", None), (MODEL, "f63d42a", None), ("../x", TAG, None),
    (MODEL, TAG, "0" * 40), (MODEL, TAG, TAG),
])
def test_rejects_bad_ids(model: str, tag: str, sha1: str, homes: Homes) -> None:
    with pytest.raises(InputError):
        resolve_weights(model, tag, sha1)
