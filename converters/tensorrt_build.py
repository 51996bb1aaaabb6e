"""ONNX -> TensorRT engine, with a dynamic-batch profile and a JSON sidecar the backend checks.

Precision follows the TensorRT release:

* TensorRT >= 10: the network is strongly typed, so the precision is the ONNX's own: FP32, FP16
  weights and activations, or INT8 through Q/DQ nodes. (TensorRT 11 removed the FP16/INT8 builder
  flags.) Make an FP16 or INT8 ONNX first; ``precision`` only confirms what the ONNX holds.
* TensorRT 8.5-9: the FP16 or INT8 builder flag, from ``precision`` or the ONNX's
  ``edgepose.precision`` metadata. INT8 is explicit quantization only (Q/DQ nodes in the ONNX,
  no calibrator); a Q/DQ graph always gets the INT8 flag, without which TensorRT 8.x refuses it.

TensorRT's INT8 is signed and symmetric (zero point 0): the UINT8 asymmetric Q/DQ of ONNX Runtime's
CPU form (``--int8 --target cpu``) is refused before any work. DLA (Jetson Xavier/Orin) takes no
dynamic shapes, so a DLA engine has one batch size, ``opt_batch``.

The engine is written atomically with a sidecar ``<engine>.json`` (:mod:`edgepose.engine_info`)
recording the TensorRT version, GPU, precision, batch range, the source ONNX's SHA-256 and the model's
edgepose metadata, which the TensorRT backend reads. When TensorRT is not installed,
:func:`trtexec_command` gives the equivalent ``trtexec`` command line.
"""
import logging
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from edgepose.backends.tensorrt import trt_logger
from edgepose.engine_info import (
    STRONGLY_TYPED_FROM, format_trtexec_command, import_tensorrt, make_sidecar, tensorrt_available, version_tuple,
    write_sidecar,
)
from edgepose.errors import EdgeposeError, InputError, ModelFileError
from edgepose.fileio import PathLike, atomic_write_bytes, file_hash
from edgepose.meta import PRECISIONS, prop_value, read_onnx_props

log = logging.getLogger(__name__)
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


class OnnxParseError(ModelFileError):
    """TensorRT's ONNX parser rejected the model; ``errors`` lists every error it reported."""

    def __init__(self, message: str, errors: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)


class EngineBuildError(EdgeposeError, RuntimeError):
    """TensorRT parsed the model but could not build an engine from it."""


# ---------------------------------------------------------------- reading the ONNX


class OnnxInfo(NamedTuple):
    """What the build needs to know about an ONNX model, read with the onnx package."""

    input_name: str
    input_shape: Tuple[Optional[int], ...]  # None = dynamic
    props: Dict[str, str]  # metadata_props
    meta_precision: Optional[str]  # edgepose.precision, if the model has it
    graph_precision: str  # what the graph holds: int8 (Q/DQ), fp16 (FP16 tensors) or fp32
    node_names: List[Tuple[str, str]]  # (name, op_type) per node, for parser errors
    output_name: str = ""  # the heatmap output (first graph output)
    output_shape: Tuple[Optional[int], ...] = ()  # None = dynamic
    unsigned_qdq: bool = False  # Q/DQ with UINT8 or non-zero zero points (ONNX Runtime's CPU form)
    input_dtype: str = "FLOAT"  # ONNX TensorProto data type names of the input and the output
    output_dtype: str = "FLOAT"


def inspect_onnx(onnx_path: PathLike) -> OnnxInfo:
    """Read the input, metadata and precision of an ONNX model (external weights are not loaded)."""
    from edgepose.converters.onnx_io import load_onnx, type_name
    from onnx import TensorProto

    path = Path(onnx_path)
    model = load_onnx(path, load_external_data=False)
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 4:
        raise ModelFileError("%s is not a top-down heatmap model: expected one (N, 3, H, W) input, found %s"
                             % (path, [i.name for i in inputs]))
    dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                 for d in inputs[0].type.tensor_type.shape.dim)
    props = read_onnx_props(model)
    meta_precision = prop_value(props, "precision")
    ops = {n.op_type for n in graph.node}
    fp16 = TensorProto.FLOAT16
    if ops & set(QDQ_OPS):
        graph_precision = "int8"
    elif (any(i.data_type == fp16 for i in graph.initializer)
          or inputs[0].type.tensor_type.elem_type == fp16
          or any(n.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in n.attribute)
                 for n in graph.node)):
        graph_precision = "fp16"
    else:
        graph_precision = "fp32"
    output = graph.output[0]
    out_dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                     for d in output.type.tensor_type.shape.dim)
    return OnnxInfo(inputs[0].name, dims, props, None if meta_precision is None else str(meta_precision),
                    graph_precision, [(n.name, n.op_type) for n in graph.node], output.name, out_dims,
                    _unsigned_qdq(graph), type_name(inputs[0].type.tensor_type.elem_type),
                    type_name(output.type.tensor_type.elem_type))


def _unsigned_qdq(graph: Any) -> bool:
    """Whether a Q/DQ node quantizes to UINT8 or has a non-zero zero point."""
    from onnx import TensorProto, numpy_helper

    constants = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    constants[node.output[0]] = attr.t
    for node in graph.node:
        if node.op_type not in QDQ_OPS:
            continue
        if len(node.input) < 3 or not node.input[2]:
            if node.op_type == "QuantizeLinear":
                return True  # no zero point: the output is UINT8 (ONNX QuantizeLinear's default)
            continue
        zero = constants.get(node.input[2])
        if zero is not None and (zero.data_type == TensorProto.UINT8 or numpy_helper.to_array(zero).any()):
            return True
    return False


# ---------------------------------------------------------------- decisions (pure functions)


class PrecisionPlan(NamedTuple):
    precision: str  # what the engine computes in: fp32, fp16 or int8
    strongly_typed: bool
    builder_flags: Tuple[str, ...]  # names in trt.BuilderFlag


UNSIGNED_INT8_REASON = (
    "ONNX Runtime's CPU INT8 form (--target cpu) quantizes activations to UINT8 with non-zero, asymmetric "
    "zero points. TensorRT's INT8 is signed and symmetric (zero point 0), so its ONNX parser does not build "
    "such Q/DQ nodes into an engine.")


def check_int8_target_for_engine(precision: str, target: str) -> None:
    """Refuse ``--int8 --target cpu --engine`` before any work: TensorRT cannot build that form."""
    if precision == "int8" and target == "cpu":
        raise InputError("--int8 --target cpu cannot be built into a TensorRT engine. %s Use --int8 --target "
                         "tensorrt (the default) with --engine; keep --target cpu for ONNX Runtime on CPUs."
                         % UNSIGNED_INT8_REASON)


def plan_precision(requested: str, info: OnnxInfo, trt_version: Any) -> PrecisionPlan:
    """Decide the engine precision and how to get it from TensorRT ``trt_version``.

    ``requested`` is ``auto`` (the ONNX's) or fp32/fp16/int8.
    """
    requested = (requested or "auto").lower()
    if requested not in ("auto",) + PRECISIONS:
        raise InputError("precision %r: use auto, %s" % (requested, ", ".join(PRECISIONS)))
    if info.unsigned_qdq:
        raise InputError("this ONNX cannot be built into a TensorRT engine. %s Quantize the FP32 model with "
                         "`edgepose convert MODEL.onnx --int8 --target tensorrt` instead." % UNSIGNED_INT8_REASON)
    major = (version_tuple(trt_version) or (STRONGLY_TYPED_FROM,))[0]
    if major >= STRONGLY_TYPED_FROM:
        held = info.graph_precision
        if info.meta_precision and info.meta_precision != held:
            log.warning("the ONNX's metadata says %s but its graph holds %s; the engine will be %s",
                        info.meta_precision, held, held)
        if requested not in ("auto", held):
            raise InputError(
                "precision %s: TensorRT %s builds strongly typed networks, so the engine has the precision of "
                "the ONNX, which is %s. Make a %s ONNX first (FP16 weights, or INT8 Q/DQ nodes), or pass "
                "precision='auto'." % (requested, trt_version, held, requested))
        return PrecisionPlan(held, True, ())
    precision = info.meta_precision if requested == "auto" else requested
    if precision not in PRECISIONS:
        precision = info.graph_precision
    if info.graph_precision == "int8":
        # TensorRT 8.x rejects Q/DQ layers unless the INT8 flag is set ("Int8 precision has been set for a
        # layer or layer output, but int8 is not configured in the builder"), whatever else is asked.
        if requested == "fp32":
            raise InputError(
                "precision fp32: the ONNX holds Q/DQ INT8 nodes, which TensorRT %s builds only as INT8. Build the "
                "FP32 ONNX for an FP32 engine, or pass precision='auto' (INT8) or 'fp16' (INT8, other layers "
                "FP16)." % trt_version)
        return PrecisionPlan("int8", False, ("INT8", "FP16") if precision == "fp16" else ("INT8",))
    if precision == "int8":
        if info.graph_precision != "int8":
            raise InputError(
                "precision int8 needs an ONNX with Q/DQ (QuantizeLinear/DequantizeLinear) nodes: edgepose "
                "builds INT8 engines by explicit quantization only, without a calibrator. Quantize the model "
                "first.")
        return PrecisionPlan("int8", False, ("INT8",))
    if precision == "fp16":
        return PrecisionPlan("fp16", False, ("FP16",))
    return PrecisionPlan("fp32", False, ())


def check_batches(min_batch: int, opt_batch: int, max_batch: int) -> None:
    if not (1 <= int(min_batch) <= int(opt_batch) <= int(max_batch)):
        raise InputError("batch sizes must satisfy 1 <= min_batch <= opt_batch <= max_batch; got %d, %d, %d"
                         % (min_batch, opt_batch, max_batch))


#: TensorRT releases without DLA, [first, end): NVIDIA's TensorRT 11.3 documentation says 10.7 was the last
#: release with DLA and that 11.0-11.2 had none either; 11.4.1 supports it again (Jetson AGX Orin, JetPack
#: 7.2.2 or later). Their bindings keep DeviceType.DLA (python/src/infer/pyCore.cpp at v11.0, v11.1), and
#: builder.num_DLA_cores is 0.
NO_DLA_RELEASES = ((10, 8), (11, 4, 1))


def check_dla(plan: PrecisionPlan, trt_version: Any, dla_core: int, cores: Optional[int] = None) -> None:
    """Refuse a DLA build that TensorRT ``trt_version`` cannot make (``cores``: the builder's DLA count)."""
    version = version_tuple(trt_version)
    first, end = NO_DLA_RELEASES
    if first <= version < end and not cores:
        raise InputError(
            "TensorRT %s has no DLA support (it reports %s DLA cores): 10.7 was the last TensorRT with DLA "
            "until 11.4.1, which has it again on Jetson AGX Orin with JetPack 7.2.2 or later. Build for DLA "
            "with JetPack 6 (TensorRT 10.3) or 5.1 (8.5.2), or leave dla_core unset to build for the GPU."
            % (trt_version, 0 if cores is None else cores))
    if plan.precision == "int8" and not plan.strongly_typed:
        # NVIDIA/TensorRT#2222 (maintainers): DLA does not take explicitly quantized (Q/DQ) networks, only
        # implicit INT8 from calibration; with GPU fallback every Q/DQ layer would run on the GPU.
        raise InputError(
            "TensorRT %s does not run explicit (Q/DQ) INT8 on DLA: DLA takes INT8 only from TensorRT's own "
            "calibration, and with GPU fallback this model would run on the GPU. Build the FP16 ONNX "
            "(`edgepose convert MODEL --fp16`) for DLA, or build this INT8 model without dla_core (GPU)."
            % trt_version)
    if cores is not None and not 0 <= int(dla_core) < cores:
        raise InputError("DLA core %d requested but this device has %d DLA core%s (Jetson Xavier and Orin "
                         "AGX/NX have 2, Orin Nano none)" % (dla_core, cores, "" if cores == 1 else "s"))


def profile_shapes(input_shape: Sequence[Optional[int]], props: Dict[str, str], min_batch: int,
                   opt_batch: int, max_batch: int) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]:
    """(min, opt, max) input shapes: the batch dimension varies, C/H/W are the model's.

    A dynamic H or W is taken from the ``edgepose.input_size`` metadata.
    """
    _, c, h, w = input_shape
    size = prop_value(props, "input_size")
    if (h is None or w is None) and size is not None:
        h, w = (int(v) for v in size)
    if c is None or h is None or w is None:
        raise InputError("the model's input shape %s leaves C, H or W open and has no edgepose.input_size "
                         "metadata; export it with fixed C/H/W" % (tuple(input_shape),))
    return tuple((int(b), int(c), int(h), int(w)) for b in (min_batch, opt_batch, max_batch))  # type: ignore


def attach_timing_cache(config: Any, path: Path, logger: Any) -> Any:
    """Give ``config`` the timing cache in ``path``, or a new one when the file is absent or unusable.

    TensorRT refuses a cache from another version or a damaged file by logging an error and returning
    no cache from ``create_timing_cache`` (its binding returns the C++ nullptr, i.e. None; TensorRT-LLM's
    builder handles it the same way), and one from another GPU by ``set_timing_cache`` returning False.
    """
    blob = path.read_bytes() if path.is_file() else b""
    if blob:
        cache = config.create_timing_cache(blob)
        if cache is not None and config.set_timing_cache(cache, False):
            return cache
        log.warning("timing cache %s was written by another TensorRT version or GPU, or is damaged: ignoring it "
                    "and starting a new one, which replaces it after the build", path)
        logger.errors.clear()  # TensorRT logged the refusal as an error; it is not a build error
    cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, False)
    return cache


def write_engine(engine_path: PathLike, engine_bytes: bytes, sidecar: Dict[str, Any]) -> Path:
    """Write the engine, then its sidecar, each atomically (temp file + rename)."""
    path = atomic_write_bytes(engine_path, engine_bytes)
    write_sidecar(path, sidecar)
    return path


def network_flags(trt: Any, trt_version: Any) -> int:
    """``create_network`` flags: strongly typed from TensorRT 10, explicit batch before."""
    major = (version_tuple(trt_version) or (0,))[0]
    flags = trt.NetworkDefinitionCreationFlag
    if major >= STRONGLY_TYPED_FROM:
        strong = getattr(flags, "STRONGLY_TYPED", None)  # ignored (always on) from TensorRT 11
        return 1 << int(strong) if strong is not None else 0
    return 1 << int(flags.EXPLICIT_BATCH)


def parser_errors(parser: Any, info: Optional[OnnxInfo] = None) -> List[str]:
    """Every error the ONNX parser recorded, each with its node's name and operator."""
    errors = []
    for i in range(int(parser.num_errors)):
        err = parser.get_error(i)
        name = op = ""
        if hasattr(err, "node_name"):  # TensorRT >= 8.6 / 10
            name, op = str(err.node_name() or ""), str(getattr(err, "node_operator", lambda: "")() or "")
        index = int(err.node()) if hasattr(err, "node") else -1
        if not name and info is not None and 0 <= index < len(info.node_names):
            name, op = info.node_names[index]
        where = "node %s" % (repr(name) if name else "#%d" % index) if (name or index >= 0) else "graph"
        if op:
            where += " (%s)" % op
        code = str(err.code()).split(".")[-1]
        errors.append("%s: %s: %s" % (where, code, str(err.desc()).strip()))
    return errors


# ---------------------------------------------------------------- public entry points


def trtexec_command(onnx_path: PathLike, engine_path: PathLike, *, max_batch: int = 32, opt_batch: int = 8,
                    min_batch: int = 1, workspace_mb: int = 1024, precision: str = "auto",
                    timing_cache: Optional[PathLike] = None, dla_core: Optional[int] = None,
                    gpu_fallback: bool = True, trt_version: Optional[str] = None) -> str:
    """The trtexec command line equivalent to :func:`build_engine` with the same arguments.

    ``trt_version`` picks the flags (default: the installed TensorRT's, else 10).
    """
    check_batches(min_batch, opt_batch, max_batch)
    if trt_version is None:
        trt_version = import_tensorrt().__version__ if tensorrt_available() else "10"
    info = inspect_onnx(onnx_path)
    plan = plan_precision(precision, info, trt_version)
    if dla_core is not None:
        check_dla(plan, trt_version, dla_core)
        min_batch = max_batch = opt_batch  # DLA: one batch size
    lo, _, _ = profile_shapes(info.input_shape, info.props, min_batch, opt_batch, max_batch)
    dynamic = info.input_shape[0] is None
    if not dynamic:
        min_batch = opt_batch = max_batch = int(info.input_shape[0])  # type: ignore[arg-type]
    return format_trtexec_command(onnx_path, engine_path, info.input_name, lo[1:], min_batch, opt_batch, max_batch,
                                  workspace_mb=workspace_mb, precision=plan.precision, trt_version=trt_version,
                                  dla_core=dla_core, gpu_fallback=gpu_fallback, timing_cache=timing_cache,
                                  dynamic_batch=dynamic, builder_flags=plan.builder_flags)


def build_engine(onnx_path: PathLike, engine_path: PathLike, *, max_batch: int = 32, opt_batch: int = 8,
                 min_batch: int = 1, workspace_mb: int = 1024, precision: str = "auto",
                 timing_cache: Optional[PathLike] = None, dla_core: Optional[int] = None,
                 gpu_fallback: bool = True, verbose: bool = False, device: int = 0) -> Path:
    """Build a TensorRT engine from an edgepose ONNX model and write it with its sidecar.

    ``timing_cache`` is a file that is read when it exists and (re)written after the build; one from
    another TensorRT version or GPU, or a damaged one, is ignored with a warning.
    ``dla_core`` builds for that DLA core (Jetson Xavier/Orin), with layers DLA cannot run falling
    back to the GPU when ``gpu_fallback``. DLA takes no dynamic shapes, so the engine then has the
    fixed batch ``opt_batch`` (the backend pads smaller batches; the runtime splits larger ones).
    Returns the engine path.
    """
    trt = import_tensorrt()
    from edgepose.backends.cuda import get_cuda

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    check_batches(min_batch, opt_batch, max_batch)
    if int(workspace_mb) <= 0:
        raise InputError("workspace_mb must be positive, got %r" % workspace_mb)
    info = inspect_onnx(onnx_path)
    trt_version = str(trt.__version__)
    plan = plan_precision(precision, info, trt_version)
    if dla_core is not None:
        min_batch = max_batch = opt_batch  # DLA: one batch size
    cuda = get_cuda()
    cuda.set_device(int(device))
    gpu = cuda.device_info(int(device))
    cuda_runtime = "%d.%d" % cuda.runtime_version()

    logger = trt_logger(trt, verbose)
    logger.errors.clear()
    builder = trt.Builder(logger)
    if dla_core is not None:
        check_dla(plan, trt_version, int(dla_core), int(getattr(builder, "num_DLA_cores", 0)))
    network = builder.create_network(network_flags(trt, trt_version))
    parser = trt.OnnxParser(network, logger)  # owns the weights: keep it alive until the build ends
    if not parser.parse_from_file(str(onnx_path)):
        errors = parser_errors(parser, info) or list(logger.errors) or ["no error recorded"]
        raise OnnxParseError(
            "TensorRT %s cannot parse %s (%d error%s):\n  %s\nCheck that the model was exported by edgepose "
            "(opset and operators TensorRT supports), or run it with the onnxruntime backend."
            % (trt_version, onnx_path, len(errors), "" if len(errors) == 1 else "s", "\n  ".join(errors)), errors)
    if network.num_inputs != 1:
        raise ModelFileError("%s has %d inputs after parsing; a pose model has one" % (onnx_path, network.num_inputs))
    tensor = network.get_input(0)
    shape = tuple(int(d) for d in tensor.shape)
    input_shape = tuple(d if d >= 0 else None for d in shape)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if any(d is None for d in input_shape):
        lo, opt, hi = profile_shapes(input_shape, info.props, min_batch, opt_batch, max_batch)
        if input_shape[0] is None and dla_core is not None:
            # "DLA does not support dynamic dimensions, so the profile's min, max, and opt values must be
            # equal" (TensorRT developer guide, DLA restrictions); otherwise every layer falls back to the GPU.
            log.info("DLA takes one batch size: the engine has a fixed batch of %d (set opt_batch to change it)",
                     opt_batch)
        elif input_shape[0] is None:
            log.info("optimisation profile for %s: min %s, opt %s, max %s", tensor.name, lo, opt, hi)
        profile = builder.create_optimization_profile()
        profile.set_shape(tensor.name, lo, opt, hi)
        config.add_optimization_profile(profile)
    if input_shape[0] is not None:
        if (min_batch, opt_batch, max_batch) != (input_shape[0],) * 3:
            log.warning("%s has a fixed batch of %d; the engine takes exactly that batch", onnx_path, input_shape[0])
        min_batch = opt_batch = max_batch = int(input_shape[0])  # type: ignore[arg-type]

    cache = None if timing_cache is None else attach_timing_cache(config, Path(timing_cache), logger)

    if dla_core is not None:
        if plan.precision == "fp32":
            log.warning("DLA runs FP16 and INT8 only; an FP32 engine will run its layers on the GPU")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        if gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    log.info("building a %s TensorRT %s engine from %s for %s (compute capability %s)", plan.precision,
             trt_version, onnx_path, gpu.name, gpu.compute_capability)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        errors = list(logger.errors)
        raise EngineBuildError(
            "TensorRT %s could not build an engine from %s%s. Try a larger workspace_mb (now %d), a smaller "
            "max_batch (now %d), or precision fp32; run with verbose=True for TensorRT's full log."
            % (trt_version, onnx_path, (": " + "; ".join(errors[-5:])) if errors else "", workspace_mb, max_batch))
    engine_bytes = bytes(memoryview(serialized))
    if cache is not None and timing_cache is not None:
        atomic_write_bytes(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    sidecar = make_sidecar(
        engine_path=engine_path, engine_bytes=engine_bytes, onnx_path=onnx_path,
        onnx_sha256=file_hash(onnx_path, "sha256"),
        info=info, plan=plan, trt_version=trt_version, gpu_name=gpu.name, compute_capability=gpu.compute_capability,
        cuda_runtime=cuda_runtime, input_shape=input_shape, min_batch=min_batch, opt_batch=opt_batch,
        max_batch=max_batch, workspace_mb=workspace_mb, dla_core=dla_core, gpu_fallback=gpu_fallback,
        timing_cache=timing_cache)
    return write_engine(engine_path, engine_bytes, sidecar)


__all__ = ["EngineBuildError", "OnnxInfo", "OnnxParseError", "PrecisionPlan", "attach_timing_cache", "build_engine",
           "check_dla", "check_int8_target_for_engine", "inspect_onnx", "plan_precision", "trtexec_command",
           "write_engine"]
