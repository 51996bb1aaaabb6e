"""Prepared calibration crops, cached as ``.npz`` in ``edgepose.cache.cache_dir("calib")``.

The key is a SHA-256 over the source's content (file names, sizes and bytes; the detector's model
and thresholds where one finds the persons), the crop settings of the model (input size, mean/std,
colour order, decoder) and the person limit; a change in any of them makes a new entry.

Crops are stored as the uint8 pixel codes the normalisation table maps to the float crops (the table
is strictly monotonic, so this is exact and 4x smaller), and re-expanded with that same table
(:func:`edgepose.transforms.normalization_lut`) on load: a cached set equals a fresh one bit for bit.
"""
from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from edgepose.cache import cache_dir
from edgepose.fileio import atomic_write_bytes
from edgepose.meta import ModelMeta
from edgepose.transforms import normalization_lut

log = logging.getLogger(__name__)
CACHE_VERSION = 1


def crop_settings(meta: ModelMeta) -> dict:
    """The metadata fields that decide what a crop looks like."""
    return {"input_size": list(meta.input_size), "mean": list(meta.mean), "std": list(meta.std),
            "color_order": meta.color_order, "decoder": meta.decoder}


def cache_key(source_fingerprint: str, meta: ModelMeta, max_persons: int) -> str:
    text = json.dumps({"version": CACHE_VERSION, "source": source_fingerprint, "crop": crop_settings(meta),
                       "max_persons": max_persons}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_path(key: str) -> Path:
    return cache_dir("calib") / ("crops-%s.npz" % key[:32])


def encode_crops(crops: np.ndarray, meta: ModelMeta) -> Optional[np.ndarray]:
    """uint8 (N, 3, H, W) codes with ``lut[c][codes[:, c]] == crops[:, c]``, or None if the crops are not
    the table's values (not made with this metadata's normalisation)."""
    lut = normalization_lut(meta.mean, meta.std)
    codes = np.empty(crops.shape, np.uint8)
    for c in range(3):
        table = lut[c]
        ascending = table[-1] > table[0]
        order = table if ascending else table[::-1]
        idx = np.clip(np.searchsorted(order, crops[:, c]), 0, 255)
        codes[:, c] = idx if ascending else 255 - idx
        if not np.array_equal(table[codes[:, c]], crops[:, c]):
            return None
    return codes


def decode_crops(codes: np.ndarray, meta: ModelMeta) -> np.ndarray:
    lut = normalization_lut(meta.mean, meta.std)
    out = np.empty(codes.shape, np.float32)
    for c in range(3):
        out[:, c] = lut[c][codes[:, c]]
    return out


def load(key: str, meta: ModelMeta) -> Optional[Tuple[np.ndarray, List[str]]]:
    """Cached (crops, origins) for ``key``, or None (missing or unreadable: then it is rebuilt)."""
    path = cache_path(key)
    if not path.is_file():
        return None
    try:
        with np.load(str(path), allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            crops = decode_crops(data["codes"], meta) if "codes" in data.files else data["crops"]
            return crops, [str(o) for o in data["origins"]]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        log.warning("ignoring unreadable calibration cache %s (%s); preparing the crops again", path, e)
        return None


def save(key: str, meta: ModelMeta, crops: np.ndarray, origins: Sequence[str]) -> Path:
    """Store crops (as codes when exact, else float32) under ``key``, atomically."""
    import io

    codes = encode_crops(crops, meta)
    arrays = {"key": np.array(key), "origins": np.array(list(origins), dtype=str)}
    if codes is not None:
        arrays["codes"] = codes
    else:
        arrays["crops"] = crops
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write_bytes(cache_path(key), buffer.getvalue())
