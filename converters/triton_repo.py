"""Triton Inference Server model repositories for edgepose models.

Layout (Triton's repository rules)::

    REPO/NAME/config.pbtxt
    REPO/NAME/1/model.onnx        (Triton's onnxruntime backend)
    REPO/NAME-trt/1/model.plan    (Triton's tensorrt backend, from an edgepose engine)

:func:`model_config` is the one place that turns what a model says about itself (input and
output names, data types and dims, edgepose metadata) plus the serving choices (max batch,
dynamic batching, instances) into a Triton model configuration, in the JSON form of Triton's
``model_config.proto``. :func:`config_pbtxt` prints it as protobuf text for a repository, and
``edgepose serve`` binds the same configuration in PyTriton.

ONNX models are read with the ``onnx`` package; engines through their JSON sidecar
(``<engine>.json``, written by the TensorRT build), never with ``tensorrt``.
"""
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import edgepose
from edgepose.engine_info import is_engine, read_sidecar, sidecar_path
from edgepose.errors import InputError, ModelFileError
from edgepose.fileio import PathLike
from edgepose.meta import edgepose_props, prop_value, read_onnx_props


DEFAULT_MAX_BATCH = 32
DEFAULT_PREFERRED = 8
DEFAULT_QUEUE_DELAY_US = 1000
ONNX_PLATFORM = "onnxruntime_onnx"
PLAN_PLATFORM = "tensorrt_plan"
MODEL_FILES = {ONNX_PLATFORM: "model.onnx", PLAN_PLATFORM: "model.plan"}
#: ONNX TensorProto data type name -> Triton data type name (config: "TYPE_" + it).
ONNX_TO_TRITON = {
    "FLOAT": "FP32", "FLOAT16": "FP16", "BFLOAT16": "BF16", "DOUBLE": "FP64", "UINT8": "UINT8",
    "UINT16": "UINT16", "UINT32": "UINT32", "UINT64": "UINT64", "INT8": "INT8", "INT16": "INT16",
    "INT32": "INT32", "INT64": "INT64", "BOOL": "BOOL", "STRING": "BYTES",
}
_ENUM_FIELDS = ("data_type", "kind")  # printed bare in protobuf text
_MAP_FIELDS = ("parameters",)
_NAME_OK = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output. ``shape`` includes the batch dimension; None = dynamic."""

    name: str
    datatype: str  # Triton's name: FP32, FP16, INT64, ...
    shape: Tuple[Optional[int], ...]


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says about itself, as far as Triton needs it."""

    path: Path
    platform: str  # onnxruntime_onnx | tensorrt_plan
    inputs: Tuple[TensorInfo, ...]
    outputs: Tuple[TensorInfo, ...]
    metadata: Dict[str, str]  # the edgepose.* metadata (empty for a foreign model)
    max_batch: Optional[int] = None  # the largest batch an engine was built for
    opt_batch: Optional[int] = None  # the batch an engine was tuned for

    @property
    def cpu_form(self) -> bool:
        """Whether this is the CPU form of an INT8 model (unsigned activations for ONNX Runtime's CPU kernels)."""
        return prop_value(self.metadata, "int8_target") == "cpu"

    @property
    def batchable(self) -> bool:
        """Whether every tensor has a dynamic first (batch) dimension."""
        return all(t.shape and t.shape[0] is None for t in self.inputs + self.outputs)


@dataclass(frozen=True)
class Batching:
    """Serving choices. ``max_batch`` None: the engine's limit, else :data:`DEFAULT_MAX_BATCH`;
    ``preferred`` empty: the engine's optimal batch (else 8) and the max batch."""

    max_batch: Optional[int] = None
    preferred: Tuple[int, ...] = ()
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    instances: int = 1
    kind: str = "auto"  # gpu | cpu | auto (see instance_kind)


# ---------------------------------------------------------------- reading models


def _triton_type(onnx_type: str, tensor: str, path: Path) -> str:
    """Triton's name of ONNX data type ``onnx_type`` (e.g. FLOAT -> FP32) of ``tensor``."""
    if onnx_type not in ONNX_TO_TRITON:
        raise ModelFileError("%s: tensor %r has ONNX type %s, which Triton cannot carry" % (path, tensor, onnx_type))
    return ONNX_TO_TRITON[onnx_type]


def _onnx_tensor(value_info: Any, path: Path) -> TensorInfo:
    from edgepose.converters.onnx_io import type_name

    tensor_type = value_info.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                  for d in tensor_type.shape.dim)
    return TensorInfo(value_info.name, _triton_type(type_name(tensor_type.elem_type), value_info.name, path), shape)


def read_onnx(path: PathLike) -> ModelInfo:
    """Inputs, outputs and edgepose metadata of an ONNX model (any model: pose or detector)."""
    from edgepose.converters.onnx_io import load_onnx, onnx

    path = Path(path)
    model = load_onnx(path, load_external_data=False)
    graph = model.graph
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer):
        raise ModelFileError("%s keeps its weights in external files, which a Triton repository entry does not "
                             "carry; save it as one file (onnx.save(model, path, save_as_external_data=False))"
                             % path)
    weights = {t.name for t in graph.initializer}
    inputs = tuple(_onnx_tensor(i, path) for i in graph.input if i.name not in weights)
    outputs = tuple(_onnx_tensor(o, path) for o in graph.output)
    metadata = edgepose_props(read_onnx_props(model))
    return ModelInfo(path, ONNX_PLATFORM, inputs, outputs, metadata)


def read_engine(path: PathLike) -> ModelInfo:
    """Inputs, outputs, batch range and metadata of an edgepose TensorRT engine, from its sidecar.

    The output name and dims come from the sidecar's ``output_name``/``output_shape`` where it
    records them, else from the source ONNX it names (the engine has that ONNX's tensors).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError("engine %s does not exist; build one with `edgepose convert MODEL.onnx --engine`" % path)
    side = read_sidecar(path)
    if side is None:
        raise ModelFileError(
            "engine %s has no sidecar %s; its Triton configuration needs the tensor names and batch range "
            "the sidecar records. Build the engine with `edgepose convert MODEL.onnx --engine`, or put the "
            "ONNX model in the repository instead" % (path, sidecar_path(path).name))
    shape = tuple(None if d is None else int(d) for d in side["input_shape"])
    if "output_name" in side and "output_shape" in side:
        # sidecars before edgepose recorded the data types were written for FP32 inputs and outputs
        in_type = _triton_type(str(side.get("input_dtype", "FLOAT")), str(side["input_name"]), path)
        out_type = _triton_type(str(side.get("output_dtype", "FLOAT")), str(side["output_name"]), path)
        inputs = (TensorInfo(str(side["input_name"]), in_type, shape),)
        outputs = (TensorInfo(str(side["output_name"]), out_type,
                              tuple(None if d is None else int(d) for d in side["output_shape"])),)
    else:
        source = Path(str(side.get("onnx") or ""))
        if not source.is_file():
            raise ModelFileError(
                "engine %s: its sidecar names no output tensor and its source ONNX %s is not there to read it "
                "from; export the repository where the engine was built, or rebuild it" % (path, source))
        onnx_info = read_onnx(source)
        inputs = tuple(TensorInfo(t.name, t.datatype, shape) for t in onnx_info.inputs)
        outputs = tuple(TensorInfo(t.name, t.datatype, (shape[0],) + t.shape[1:]) for t in onnx_info.outputs)
    metadata = edgepose_props(dict(side.get("metadata") or {}))
    max_batch = int(side["max_batch"]) if side.get("max_batch") else None
    opt_batch = int(side["opt_batch"]) if side.get("opt_batch") else None
    return ModelInfo(path, PLAN_PLATFORM, inputs, outputs, metadata, max_batch, opt_batch)


def read_model(path: PathLike) -> ModelInfo:
    """:func:`read_engine` for ``.engine``/``.plan``/``.trt`` files, else :func:`read_onnx`."""
    return read_engine(path) if is_engine(path) else read_onnx(path)


def triton_name(info: ModelInfo) -> str:
    """The repository name of a model: its file stem (characters Triton's clients and PyTriton
    accept; others become ``_``), with ``-trt`` for an engine so it can sit beside its ONNX."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", info.path.stem).lstrip(".") or "model"
    return stem + "-trt" if info.platform == PLAN_PLATFORM else stem


def check_name(name: str) -> str:
    """``name`` if Triton (and PyTriton) accept it as a model name, else an :class:`InputError`."""
    if not _NAME_OK.match(name) or name.startswith("."):
        raise InputError("model name %r is not usable on Triton: use letters, digits, '.', '_' and '-' "
                         "(not starting with '.')" % name)
    return name


# ---------------------------------------------------------------- the configuration


def _dims(shape: Sequence[Optional[int]]) -> List[int]:
    return [-1 if d is None else int(d) for d in shape]


def instance_kind(info: ModelInfo, requested: str = "auto") -> str:
    """Where Triton runs ``info``: ``requested`` (gpu, cpu), or for ``auto`` the kind its form fits:
    cpu for the CPU form of INT8, else gpu. A kind the model does not fit is refused with the reason."""
    if requested not in ("auto", "gpu", "cpu"):
        raise InputError("instance kind must be 'auto', 'gpu' or 'cpu', got %r" % requested)
    if info.platform == PLAN_PLATFORM:
        if requested == "cpu":
            raise InputError("%s is a TensorRT engine, which runs on a GPU only; use instance kind gpu" % info.path)
        return "gpu"
    if info.cpu_form:
        if requested == "gpu":
            raise InputError(
                "%s is the CPU form of INT8 (unsigned activations, made for ONNX Runtime's CPU kernels), which GPU "
                "instances do not run as INT8; use instance kind cpu, or convert with `--int8 --target tensorrt` "
                "for GPU instances" % info.path)
        return "cpu"
    return "gpu" if requested == "auto" else requested


def model_config(info: ModelInfo, name: str, batching: Batching = Batching()) -> Dict[str, Any]:
    """The Triton model configuration of ``info`` served as ``name`` (JSON form of model_config.proto).

    A model whose tensors all have a dynamic batch dimension gets ``max_batch_size`` and dynamic
    batching; one with a fixed batch (the YOLOX release files) gets ``max_batch_size: 0`` and its
    full shapes, since Triton cannot batch it. The edgepose metadata becomes ``parameters``
    (``edgepose.*`` keys, JSON values), which the triton backend reads back.
    """
    check_name(name)
    if batching.instances < 1:
        raise InputError("instances must be at least 1, got %d" % batching.instances)
    kind = instance_kind(info, batching.kind)
    if batching.max_queue_delay_us < 0:
        raise InputError("the max queue delay must be >= 0 microseconds, got %d" % batching.max_queue_delay_us)
    config: Dict[str, Any] = {"name": name, "platform": info.platform}
    if info.batchable:
        limit = info.max_batch
        max_batch = int(batching.max_batch if batching.max_batch is not None else limit or DEFAULT_MAX_BATCH)
        if max_batch < 1:
            raise InputError("max batch must be at least 1, got %d" % max_batch)
        if limit is not None and max_batch > limit:
            raise InputError("%s was built for batches up to %d, so Triton cannot send it %d; lower the max batch "
                             "or rebuild the engine with a larger max batch" % (info.path, limit, max_batch))
        preferred = sorted(set(batching.preferred or (min(info.opt_batch or DEFAULT_PREFERRED, max_batch),
                                                      max_batch)))
        if preferred[0] < 1 or preferred[-1] > max_batch:
            raise InputError("preferred batch sizes %s must lie in 1..%d (the max batch)" % (preferred, max_batch))
        config["max_batch_size"] = max_batch
        strip = 1
    else:
        config["max_batch_size"] = 0
        strip = 0
    config["input"] = [{"name": t.name, "data_type": "TYPE_" + t.datatype, "dims": _dims(t.shape[strip:])}
                       for t in info.inputs]
    config["output"] = [{"name": t.name, "data_type": "TYPE_" + t.datatype, "dims": _dims(t.shape[strip:])}
                        for t in info.outputs]
    if info.batchable:
        config["dynamic_batching"] = {"preferred_batch_size": preferred,
                                      "max_queue_delay_microseconds": int(batching.max_queue_delay_us)}
    config["instance_group"] = [{"count": int(batching.instances), "kind": "KIND_" + kind.upper()}]
    if info.metadata:
        config["parameters"] = {k: {"string_value": v} for k, v in sorted(info.metadata.items())}
    return config


def _quote(text: str) -> str:
    """A protobuf text-format string literal (C escapes; non-ASCII as octal UTF-8 bytes)."""
    out = []
    for byte in text.encode("utf-8"):
        if byte in (0x22, 0x5C):
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append("\\%03o" % byte)
    return '"%s"' % "".join(out)


def _scalar(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return str(value) if key in _ENUM_FIELDS else _quote(str(value))


def _fields(message: Mapping[str, Any], indent: str) -> List[str]:
    lines = []
    for key, value in message.items():
        if key in _MAP_FIELDS:
            for map_key, map_value in value.items():  # flat messages, e.g. {"string_value": "..."}
                inline = " ".join(line.strip() for line in _fields(map_value, ""))
                lines += ["%s%s {" % (indent, key), "%s  key: %s" % (indent, _quote(map_key)),
                          "%s  value { %s }" % (indent, inline), "%s}" % indent]
        elif isinstance(value, Mapping):
            lines += ["%s%s {" % (indent, key)] + _fields(value, indent + "  ") + ["%s}" % indent]
        elif isinstance(value, (list, tuple)) and value and isinstance(value[0], Mapping):
            for item in value:
                lines += ["%s%s {" % (indent, key)] + _fields(item, indent + "  ") + ["%s}" % indent]
        elif isinstance(value, (list, tuple)):
            lines.append("%s%s: [%s]" % (indent, key, ", ".join(_scalar(key, v) for v in value)))
        else:
            lines.append("%s%s: %s" % (indent, key, _scalar(key, value)))
    return lines


def config_pbtxt(config: Mapping[str, Any], comment: str = "") -> str:
    """``config`` (from :func:`model_config`) as the protobuf text of a ``config.pbtxt``."""
    head = ["# %s" % line for line in comment.splitlines()]
    return "\n".join(head + _fields(config, "")) + "\n"


# ---------------------------------------------------------------- the repository


@dataclass(frozen=True)
class RepoEntry:
    """One model directory written by :func:`write_repository`."""

    name: str
    info: ModelInfo
    config: Dict[str, Any]

    @property
    def model_file(self) -> str:
        return "1/" + MODEL_FILES[self.info.platform]


def plan_repository(models: Sequence[PathLike], batching: Batching = Batching()) -> List[RepoEntry]:
    """Read every model and make its configuration; nothing is written yet."""
    entries: List[RepoEntry] = []
    for path in models:
        info = read_model(path)
        name = triton_name(info)
        if any(e.name == name for e in entries):
            raise InputError("two models would both be named %r in the repository (%s and %s); rename one file"
                             % (name, next(e.info.path for e in entries if e.name == name), info.path))
        entries.append(RepoEntry(name, info, model_config(info, name, batching)))
    return entries


def _comment(entry: RepoEntry) -> str:
    meta = entry.info.metadata
    what = prop_value(meta, "name", "a model without edgepose metadata")
    return "Written by edgepose %s from %s (%s)." % (edgepose.__version__, entry.info.path.name, what)


def write_repository(entries: Sequence[RepoEntry], repo: PathLike, overwrite: bool = False) -> List[Path]:
    """Write ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/model.*`` for each entry.

    Everything is staged in a temporary folder beside ``repo`` and moved in model by model, so
    Triton never sees a half-written model. An existing model folder is an error unless
    ``overwrite``; other models already in ``repo`` are left alone. Returns the model folders.
    """
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise InputError("%s exists and is not a folder; give a folder for the Triton repository" % repo)
    clash = [e.name for e in entries if (repo / e.name).exists()]
    if clash and not overwrite:
        raise InputError("%s already holds %s; pass --overwrite to replace %s"
                         % (repo, ", ".join(clash), "it" if len(clash) == 1 else "them"))
    repo.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".edgepose-triton-", dir=str(repo.resolve().parent)))
    try:
        for entry in entries:
            folder = staging / entry.name
            (folder / "1").mkdir(parents=True)
            (folder / "config.pbtxt").write_text(config_pbtxt(entry.config, _comment(entry)), encoding="utf-8")
            shutil.copyfile(str(entry.info.path), str(folder / entry.model_file))
        written = []
        for entry in entries:
            target = repo / entry.name
            if target.exists():
                os.replace(str(target), str(staging / (".old-" + entry.name)))
            os.replace(str(staging / entry.name), str(target))
            written.append(target)
        return written
    finally:
        shutil.rmtree(str(staging), ignore_errors=True)


__all__ = ["Batching", "ModelInfo", "RepoEntry", "TensorInfo", "check_name", "config_pbtxt", "instance_kind",
           "model_config", "plan_repository", "read_engine", "read_model", "read_onnx", "triton_name",
           "write_repository"]
