"""What edgepose knows about TensorRT engines, apart from running them (which is
:mod:`edgepose.backends.tensorrt`) and building them (:mod:`edgepose.converters.tensorrt_build`).

* file suffixes of engines, and the TensorRT releases edgepose works with (``import_tensorrt``);
* the JSON sidecar written beside every engine (``pose.engine.json``): its contents
  (:func:`make_sidecar`), writing and reading it;
* the compatibility rule: an engine runs only with the TensorRT release and the GPU model that built
  it (:func:`check_engine_compatible`), and how to rebuild one (:func:`rebuild_hint`, the ``trtexec``
  command line of :func:`format_trtexec_command`).

Importable without tensorrt: nothing here imports it at module import time.
"""
import datetime
import hashlib
import json
import re
import shlex
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import edgepose
from edgepose.errors import MissingDependencyError, ModelFileError
from edgepose.fileio import PathLike, atomic_write_bytes
from edgepose.meta import ModelMeta, encode_prop
from edgepose.optional import require

#: File suffixes of serialized TensorRT engines (``.plan`` is Triton's name, ``.trt`` trtexec users').
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
#: Oldest TensorRT with the named-tensor API (set_input_shape, set_tensor_address, execute_async_v3).
MIN_TENSORRT = (8, 5)
#: First TensorRT whose networks edgepose builds strongly typed (precision from the ONNX).
STRONGLY_TYPED_FROM = 10
SIDECAR_FORMAT = "edgepose-tensorrt-engine/1"
REBUILD_COMMAND = "edgepose convert MODEL.onnx --engine"
INSTALL_HINT = (
    "On Jetson, TensorRT comes with JetPack (apt package python3-libnvinfer; create the venv with "
    "--system-site-packages to see it); on a PC with an NVIDIA GPU, `pip install tensorrt` (NVIDIA's "
    "wheels, from https://pypi.nvidia.com). Without TensorRT, run the .onnx model with the onnxruntime "
    "backend.")


def is_engine(path: PathLike) -> bool:
    """Whether ``path`` names a TensorRT engine (by its suffix, :data:`ENGINE_SUFFIXES`)."""
    return str(path).lower().endswith(ENGINE_SUFFIXES)


# ---------------------------------------------------------------- TensorRT versions and the lazy import


def version_tuple(version: Any) -> Tuple[int, ...]:
    """``"10.3.0.26"`` -> (10, 3, 0, 26); stops at the first part that is not a number."""
    parts: List[int] = []
    for piece in str(version).strip().split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group(0)))
        if m.group(0) != piece:
            break
    return tuple(parts)


def import_tensorrt() -> Any:
    """``import tensorrt``, or a :class:`MissingDependencyError` saying how to install it (>= 8.5)."""
    trt = require("tensorrt", "tensorrt", "the TensorRT backend and engine builds (NVIDIA TensorRT >= %d.%d)"
                  % MIN_TENSORRT, INSTALL_HINT, errors=(ImportError, OSError))  # OSError: no libnvinfer
    version = getattr(trt, "__version__", "0")
    if version_tuple(version)[:2] < MIN_TENSORRT:
        raise MissingDependencyError(
            "TensorRT %s is too old: edgepose needs TensorRT >= %d.%d (the named-tensor API); "
            "JetPack 5.1 ships 8.5, JetPack 6 ships 8.6 or 10.3. %s" % ((version,) + MIN_TENSORRT + (INSTALL_HINT,)))
    return trt


def tensorrt_available() -> bool:
    """Whether a usable TensorRT (>= 8.5) can be imported here."""
    try:
        import_tensorrt()
    except MissingDependencyError:
        return False
    return True


# ---------------------------------------------------------------- the sidecar


def sidecar_path(engine_path: PathLike) -> Path:
    """``pose.engine`` -> ``pose.engine.json``."""
    return Path(str(engine_path) + ".json")


def make_sidecar(*, engine_path: PathLike, engine_bytes: bytes, onnx_path: PathLike, onnx_sha256: str,
                 info: Any, plan: Any, trt_version: str, gpu_name: str,
                 compute_capability: str, cuda_runtime: str, input_shape: Sequence[Optional[int]],
                 min_batch: int, opt_batch: int, max_batch: int, workspace_mb: int,
                 dla_core: Optional[int], gpu_fallback: bool, timing_cache: Optional[PathLike]) -> Dict[str, Any]:
    """The JSON sidecar of an engine built from ``info`` (:class:`~edgepose.converters.tensorrt_build.OnnxInfo`)
    as ``plan`` (:class:`~edgepose.converters.tensorrt_build.PrecisionPlan`)."""
    metadata = dict(info.props)
    if ModelMeta.has_edgepose_props(metadata):  # the engine's precision, not the ONNX's
        metadata.update(encode_prop("precision", plan.precision))
    return {
        "format": SIDECAR_FORMAT,
        "engine": Path(engine_path).name,
        "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
        "onnx": str(Path(onnx_path).resolve()),
        "onnx_sha256": onnx_sha256,
        "tensorrt_version": str(trt_version),
        "gpu_name": gpu_name,
        "compute_capability": compute_capability,
        "cuda_runtime": cuda_runtime,
        "precision": plan.precision,
        "strongly_typed": plan.strongly_typed,
        "builder_flags": list(plan.builder_flags),
        "input_name": info.input_name,
        "input_shape": list(input_shape),
        "input_dtype": info.input_dtype,
        "output_name": info.output_name,
        "output_shape": list(info.output_shape),
        "output_dtype": info.output_dtype,
        "min_batch": int(min_batch),
        "opt_batch": int(opt_batch),
        "max_batch": int(max_batch),
        "workspace_mb": int(workspace_mb),
        "dla_core": None if dla_core is None else int(dla_core),
        "gpu_fallback": bool(gpu_fallback) if dla_core is not None else None,
        "timing_cache": None if timing_cache is None else str(timing_cache),
        "built_at": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "edgepose_version": edgepose.__version__,
        "metadata": metadata,
    }


def write_sidecar(engine_path: PathLike, sidecar: Mapping[str, Any]) -> Path:
    """Write the sidecar of the engine at ``engine_path`` atomically; returns its path."""
    text = json.dumps(sidecar, indent=2, sort_keys=True) + "\n"
    return atomic_write_bytes(sidecar_path(engine_path), text.encode())


def read_sidecar(engine_path: PathLike) -> Optional[Dict[str, Any]]:
    """The engine's sidecar as a dict, ``None`` when there is none; a broken one is an error."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelFileError("engine sidecar %s cannot be read (%s); delete it and rebuild the engine with "
                             "`%s`" % (path, e, REBUILD_COMMAND)) from e
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise ModelFileError("%s is not an edgepose engine sidecar (expected format %r); delete it and "
                             "rebuild the engine with `%s`" % (path, SIDECAR_FORMAT, REBUILD_COMMAND))
    return data


def check_sidecar_describes(sidecar: Mapping[str, Any], engine_path: PathLike, engine_bytes: bytes) -> None:
    """Raise :class:`ModelFileError` when ``sidecar`` records another engine's SHA-256 than ``engine_bytes``'."""
    digest = sidecar.get("engine_sha256")
    if digest and digest != hashlib.sha256(engine_bytes).hexdigest():
        raise ModelFileError(
            "sidecar %s describes another engine than %s (SHA-256 differs): the engine was replaced "
            "or the sidecar is stale. Rebuild with `%s`." % (sidecar_path(engine_path), engine_path, REBUILD_COMMAND))


# ---------------------------------------------------------------- compatibility and rebuilding


def _same_tensorrt(built: str, here: str) -> bool:
    # Engines are tied to the exact TensorRT release; major.minor.patch identify it (the fourth
    # part is the build number of the same release).
    return version_tuple(built)[:3] == version_tuple(here)[:3]


def _norm_name(name: Any) -> str:
    return " ".join(str(name).split()).lower()


def check_engine_compatible(sidecar: Mapping[str, Any], trt_version: str, gpu_name: str,
                            compute_capability: Union[str, Sequence[int]],
                            engine_path: Optional[PathLike] = None) -> None:
    """Raise :class:`ModelFileError` when the engine described by ``sidecar`` cannot run here.

    It cannot when it was built by another TensorRT release (major.minor.patch) or for another
    GPU (compute capability or model name). Fields the build could not record ("unknown") are
    not compared. The message says what differs and how to rebuild.
    """
    if not isinstance(compute_capability, str):
        compute_capability = "%d.%d" % tuple(compute_capability)[:2]
    built_trt = str(sidecar.get("tensorrt_version") or "unknown")
    built_gpu = str(sidecar.get("gpu_name") or "unknown")
    built_cc = str(sidecar.get("compute_capability") or "unknown")
    problems = []
    if built_trt != "unknown" and not _same_tensorrt(built_trt, trt_version):
        problems.append("TensorRT %s (this machine has %s)" % (built_trt, trt_version))
    if built_cc != "unknown" and built_cc != str(compute_capability):
        problems.append("a GPU of compute capability %s (this one, %s, is %s)" % (
            built_cc, gpu_name, compute_capability))
    elif built_gpu != "unknown" and _norm_name(built_gpu) != _norm_name(gpu_name):
        problems.append("a GPU named %s (this one is %s)" % (built_gpu, gpu_name))
    if problems:
        what = "engine %s" % engine_path if engine_path else "this engine"
        raise ModelFileError(
            "%s was built with %s. TensorRT engines run only with the TensorRT release and the GPU model "
            "that built them: rebuild it on this machine from its ONNX model. %s"
            % (what, " and ".join(problems), rebuild_hint(sidecar, trt_version, engine_path)))


def rebuild_hint(sidecar: Optional[Mapping[str, Any]] = None, trt_version: Optional[str] = None,
                 engine_path: Optional[PathLike] = None) -> str:
    """How to rebuild an engine: the edgepose command and, where the sidecar allows, trtexec's."""
    side = dict(sidecar or {})
    onnx = side.get("onnx") or "MODEL.onnx"
    text = "Run `%s`" % REBUILD_COMMAND.replace("MODEL.onnx", shlex.quote(str(onnx)))
    shape = side.get("input_shape")
    if side.get("input_name") and isinstance(shape, list) and len(shape) == 4 and all(shape[1:]):
        cmd = format_trtexec_command(
            onnx, engine_path or side.get("engine") or "MODEL.engine", side["input_name"],
            shape[1:], int(side.get("min_batch") or 1), int(side.get("opt_batch") or 1),
            int(side.get("max_batch") or 1), workspace_mb=int(side.get("workspace_mb") or 1024),
            precision=str(side.get("precision") or "fp32"),
            trt_version=trt_version or str(side.get("tensorrt_version") or "10"),
            dla_core=side.get("dla_core"), gpu_fallback=bool(side.get("gpu_fallback", True)),
            dynamic_batch=shape[0] is None, builder_flags=side.get("builder_flags"))
        text += " or `%s`" % cmd
    return text + "."


def format_trtexec_command(onnx_path: PathLike, engine_path: PathLike, input_name: str,
                           input_chw: Sequence[int], min_batch: int, opt_batch: int, max_batch: int, *,
                           workspace_mb: int = 1024, precision: str = "fp32", trt_version: Any = "10",
                           dla_core: Optional[int] = None, gpu_fallback: bool = True,
                           timing_cache: Optional[PathLike] = None, dynamic_batch: bool = True,
                           builder_flags: Optional[Sequence[str]] = None) -> str:
    """The trtexec command line that builds what :func:`~edgepose.converters.tensorrt_build.build_engine`
    builds, for TensorRT ``trt_version``.

    TensorRT 10: ``--stronglyTyped`` (precision comes from the ONNX); 11 and later are always strongly
    typed (no flag); 8.x: ``--fp16``/``--int8`` builder flags, from ``builder_flags`` (names in
    ``trt.BuilderFlag``) when given, else from ``precision``. A DLA build needs one batch size: pass
    ``min_batch == opt_batch == max_batch``.
    """
    major = (version_tuple(trt_version) or (STRONGLY_TYPED_FROM,))[0]
    dims = "x".join(str(int(d)) for d in input_chw)
    args = ["trtexec", "--onnx=%s" % onnx_path, "--saveEngine=%s" % engine_path]
    if dynamic_batch:
        for flag, batch in (("minShapes", min_batch), ("optShapes", opt_batch), ("maxShapes", max_batch)):
            args.append("--%s=%s:%dx%s" % (flag, input_name, int(batch), dims))
    args.append("--memPoolSize=workspace:%d" % int(workspace_mb))
    if major == STRONGLY_TYPED_FROM:
        args.append("--stronglyTyped")
    elif major > STRONGLY_TYPED_FROM:
        pass  # TensorRT 11 removed weak typing: every network is strongly typed
    elif builder_flags is not None:
        args += ["--" + flag.lower() for flag in builder_flags if flag in ("INT8", "FP16")]
    elif precision == "fp16":
        args.append("--fp16")
    elif precision == "int8":
        args.append("--int8")
    if timing_cache is not None:
        args.append("--timingCacheFile=%s" % timing_cache)
    if dla_core is not None:
        args.append("--useDLACore=%d" % int(dla_core))
        if gpu_fallback:
            args.append("--allowGPUFallback")
    return " ".join(shlex.quote(a) for a in args)


__all__ = ["ENGINE_SUFFIXES", "INSTALL_HINT", "MIN_TENSORRT", "REBUILD_COMMAND", "SIDECAR_FORMAT",
           "STRONGLY_TYPED_FROM", "check_engine_compatible", "check_sidecar_describes", "format_trtexec_command",
           "import_tensorrt", "is_engine", "make_sidecar", "read_sidecar", "rebuild_hint", "sidecar_path",
           "tensorrt_available", "version_tuple", "write_sidecar"]
