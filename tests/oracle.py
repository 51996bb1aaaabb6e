"""The GluonCV oracle fixtures, for every test that compares a graph with GluonCV's own heatmaps.

Six cases are stored in ../shared/parity/fixtures; the other ten are generated with
../shared/parity/tools/make_fixtures.py into the folder named by EDGEPOSE_ORACLE_ZOO (CI does so
with a fresh seed salt on every run). A case whose fixture is absent skips with that instruction.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from support import SHARED

STORED_FOLDER = SHARED / "parity" / "fixtures"
ORACLE_ZOO = os.environ.get("EDGEPOSE_ORACLE_ZOO")
STORED = sorted(p.stem for p in STORED_FOLDER.glob("*.json"))


def all_cases() -> list[str]:
    """Every zoo entry: the stored cases first, then the ones to generate."""
    from edgepose.converters.zoo import list_models

    return STORED + [e.name for e in list_models() if e.name not in STORED]


def folder_of(case: str, what: str = "check it against GluonCV") -> Path:
    """The folder holding ``case``'s fixture; skips the test when it is not there."""
    if case in STORED:
        return STORED_FOLDER
    if not ORACLE_ZOO or not (Path(ORACLE_ZOO) / (case + ".json")).exists():
        pytest.skip("set EDGEPOSE_ORACLE_ZOO to the output folder of shared/parity/tools/make_fixtures.py "
                    "to %s for %s" % (what, case))
    return Path(ORACLE_ZOO)


def tolerance(case: str) -> float:
    """Relative to max|GluonCV|: float32 engines drift apart with depth."""
    from edgepose.converters.zoo import get_entry

    backbone = get_entry(case).backbone
    if "101" in backbone or "152" in backbone:
        return 2e-3
    if "50" in backbone:
        return 3e-4
    return 1e-4


def load_case(case: str, what: str = "check it against GluonCV"):
    """(fixture info, ONNX graph built from GluonCV's .params, input, GluonCV's output)."""
    from edgepose.converters.export import build_onnx, load_weights_file
    from edgepose.converters.zoo import get_entry

    folder = folder_of(case, what)
    info = json.loads((folder / (case + ".json")).read_text())
    model = build_onnx(get_entry(case), load_weights_file(folder / info["params_file"]), "test")
    return info, model, np.load(folder / info["input_file"]), np.load(folder / info["output_file"])


def check_case(case: str, transform: Callable = lambda model: model) -> None:
    """``transform`` (the built graph) in ONNX Runtime reproduces GluonCV's heatmaps for ``case``."""
    import onnxruntime as ort

    from edgepose.converters.zoo import get_entry

    info, model, x, ref = load_case(case)
    assert tuple(info["input_hw"]) == get_entry(case).input_size
    assert info["num_params_trainable"] == get_entry(case).params
    session = ort.InferenceSession(transform(model).SerializeToString(), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"input": x})[0]
    assert ours.shape == ref.shape
    tol = tolerance(case) * np.abs(ref).max()
    assert np.abs(ours - ref).max() <= tol
    # Per-joint argmax: identical, except where GluonCV's own top value and its value at our
    # argmax lie within the tolerance (a tie at float32 precision, seen once in ResNet-152).
    flat_ref = ref.reshape(ref.shape[0], ref.shape[1], -1)
    ours_idx = ours.reshape(flat_ref.shape).argmax(-1)
    ref_idx = flat_ref.argmax(-1)
    at_ours = np.take_along_axis(flat_ref, ours_idx[..., None], -1)[..., 0]
    differ = ours_idx != ref_idx
    assert differ.mean() <= 0.05
    assert np.all(flat_ref.max(-1)[differ] - at_ours[differ] <= tol)
