"""Build every model file the runtime-only test suites read, into $EDGEPOSE_TEST_MODELS.

The Python 3.8 suite (NumPy, OpenCV and ONNX Runtime only, as on JetPack 5) cannot build ONNX
models itself. Run this once with a Python that has edgepose[convert] installed, with the same
EDGEPOSE_TEST_MODELS, then run that suite on its own:

    .venv/bin/python tests/build_test_models.py
    .venv38/bin/python -m pytest tests/test_runtime.py ...
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import legacy_models  # noqa: E402
import support  # noqa: E402

#: zoo exports with random weights (seed 0) that runtime tests use
RANDOM_MODELS = ("mobile_pose_mobilenetv3_small",)


def main() -> None:
    for name in RANDOM_MODELS:
        print(support.random_model(name))
    for name in sorted(legacy_models.CORPUS):
        print(legacy_models.legacy_file(name)["legacy"])
    print(legacy_models.normalised_files("mxnet")["int8"])


if __name__ == "__main__":
    main()
