"""benchmarks/gpu_check.py: its no-CUDA message, and its whole flow with the CPU standing in for the GPU."""
import json
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from support import SHARED, cli_env

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def run_check(*args: object, home: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          env=cli_env(home), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_without_cuda_it_says_so_and_exits_0(tmp_path: Path):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider: run the check itself")
    proc = run_check(home=tmp_path)
    assert proc.stdout.startswith("no CUDA provider: skipping GPU rows (onnxruntime %s offers" % ort.__version__)
    assert list(tmp_path.iterdir()) == []  # nothing exported, nothing cached


def test_whole_flow_on_the_cpu_provider(tmp_path: Path):
    pytest.importorskip("onnx", reason="the check exports models (pip install 'edgepose[convert]')")
    proc = run_check("--provider", "CPUExecutionProvider", "--models", "mobile_pose_mobilenetv3_small",
                     "--batches", "1,2", "--repeats", "1", "--shared", SHARED, "--json", tmp_path / "check.json",
                     home=tmp_path)
    assert "TensorRT rows: skipped (CPU provider)" in proc.stdout
    assert ("| model | engine | precision | heatmap diff / peak | mean OKS vs CPU FP32 | max px | b1 persons/s | "
            "b2 persons/s | V100 MXNet b64 |") in proc.stdout
    result = json.loads((tmp_path / "check.json").read_text())
    rows = {r["precision"]: r for r in result["rows"]}
    assert sorted(rows) == ["fp16", "fp32", "int8"] and result["skipped"] == [] and result["failed"] == {}
    assert {r["engine"] for r in rows.values()} == {"onnxruntime CPU"}
    fp32, fp16 = rows["fp32"], rows["fp16"]
    assert fp32["heatmap_rel_err"] == 0.0 and fp32["mean_oks"] == 1.0  # the reference against itself
    assert 0 < fp16["heatmap_rel_err"] < 1e-2 and fp16["mean_oks"] > 0.9
    assert fp32["v100_fps"] == 6866.4 and set(fp32["persons_per_s"]) == {"1", "2"}
    assert "| mobile_pose_mobilenetv3_small | onnxruntime CPU | fp32 | 0.0e+00 | 1.0000 | 0.00 |" in proc.stdout
