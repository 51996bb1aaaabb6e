"""The acceptance test: our ONNX export in ONNX Runtime reproduces GluonCV's heatmaps.

All 16 zoo entries: the six stored fixtures (../shared/parity/fixtures) always run; the ten larger
ones run from EDGEPOSE_ORACLE_ZOO, which CI fills with fixtures made by GluonCV on every run
(tests/oracle.py).
"""
import pytest

import oracle


@pytest.mark.parametrize("case", oracle.all_cases())
def test_export_matches_gluoncv(case: str) -> None:
    oracle.check_case(case)


def test_stored_fixtures_found() -> None:
    assert len(oracle.STORED) == 6, "expected the 6 stored GluonCV fixtures in %s" % oracle.STORED_FOLDER
