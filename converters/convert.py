"""The whole ``edgepose convert`` flow: source -> FP32 ONNX -> FP16 / INT8 variant -> TensorRT engine.

The source is a zoo name (built from GluonCV weights), a top-down heatmap ONNX, or a YOLOX person
detector ONNX, recognised by its inputs and outputs (each normalised first unless it already is an
edgepose model). Detector conversions go to ``$EDGEPOSE_HOME/detectors`` (where the default detector
lookup finds the FP32 one), pose conversions to ``$EDGEPOSE_HOME/models``. Each step is one call into
its own module; this file only decides names and order.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from edgepose.cache import cache_dir
from edgepose.engine_info import ENGINE_SUFFIXES, is_engine
from edgepose.errors import InputError
from edgepose.fileio import PathLike
from edgepose.meta import PRECISIONS, ModelMeta, read_onnx_props


@dataclass
class ConvertResult:
    """What was written, in order, and what to run on the device when no engine could be built here."""

    files: List[Path] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    engine_commands: List[str] = field(default_factory=list)
    precision: str = ""  # what was delivered (an INT8 request may deliver FP16)

    @property
    def final(self) -> Path:
        return self.files[-1]


def is_edgepose_model(path: Path) -> bool:
    """Whether ``path`` carries edgepose metadata; ModelFileError when it is no readable ONNX file."""
    from edgepose.converters.onnx_io import load_onnx

    return ModelMeta.has_edgepose_props(read_onnx_props(load_onnx(path, load_external_data=False)))


def variant_name(base: str, precision: str, target: str) -> str:
    """``base`` -> ``base.onnx`` / ``base-fp16.onnx`` / ``base-int8.onnx`` / ``base-int8-cpu.onnx``."""
    if precision == "fp32":
        return base + ".onnx"
    if precision == "fp16":
        return base + "-fp16.onnx"
    return base + ("-int8-cpu.onnx" if target == "cpu" else "-int8.onnx")


def check_request(precision: str, output: Optional[Path], engine: bool, calib: Optional[PathLike],
                  target: str, method: Optional[str]) -> None:
    """Refuse a request that cannot succeed before any work is done (bad option values, missing files)."""
    if precision not in PRECISIONS:
        raise InputError("precision must be one of %s, got %r" % (", ".join(PRECISIONS), precision))
    if engine:
        from edgepose.converters.tensorrt_build import check_int8_target_for_engine

        check_int8_target_for_engine(precision, target)
    if precision == "int8":
        from edgepose.converters.quantize import DEFAULT_METHOD, quantizer_options

        quantizer_options(target, method or DEFAULT_METHOD)
        if calib is not None and not Path(calib).exists():
            raise InputError("--calib %s does not exist; give a folder of photos, a COCO keypoints .json, a video "
                             "or a calibration .npz" % calib)
    if output is None:
        return
    if output.is_dir():
        raise InputError("-o %s is a folder; give the path of the file to write" % output)
    if output.suffix != ".onnx" and not is_engine(output):
        raise InputError("-o must end in .onnx, or in %s with --engine; got %s" % ("/".join(ENGINE_SUFFIXES), output))
    if is_engine(output) and not engine:
        raise InputError("-o %s names an engine: add --engine (or give an .onnx path)" % output)
    parent = next((p for p in output.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise InputError("-o %s: %s is a file, not a folder" % (output, parent))


def convert_model(source: str, *, output: Optional[PathLike] = None, precision: str = "fp32",
                  weights: Optional[PathLike] = None, random: bool = False, seed: int = 0,
                  download: bool = True, calib: Optional[PathLike] = None, target: str = "tensorrt",
                  method: Optional[str] = None, force: bool = False, fp16_fallback: bool = True,
                  detector: Optional[PathLike] = None, engine: bool = False, max_batch: int = 32,
                  opt_batch: int = 8, say: Callable[[str], None] = lambda line: None) -> ConvertResult:
    """Convert ``source`` (zoo name or .onnx file) to the requested precision and, optionally, an engine.

    Without ``output`` every file goes to the edgepose model cache under its variant name. With
    ``output`` the final file is written exactly there, whatever precision was delivered (an INT8
    request that fails the accuracy gate writes the FP16 model at ``output``, and says so, unless
    ``fp16_fallback`` is off); intermediate files go to a temporary folder, never beside it. With
    ``engine`` and an ``.onnx`` output, the engine goes beside it (same stem, ``.engine``); with an
    engine output, the ONNX it is built from is kept in the model cache. ``say`` receives progress lines.
    """
    out = Path(output) if output is not None else None
    check_request(precision, out, engine, calib, target, method)
    onnx_out = out if out is not None and out.suffix == ".onnx" else None
    result = ConvertResult(precision=precision)
    source_path = Path(source)
    from_onnx = source_path.suffix == ".onnx" or source_path.is_file()
    if from_onnx and (weights is not None or random):
        raise InputError("--weights/--random-weights apply to zoo names, not to an ONNX source")
    detector_source = from_onnx and source_path.is_file() and _is_detector(source_path)
    if detector_source and detector is not None:
        raise InputError("--detector finds the persons a pose model calibrates on; %s is itself a detector, which "
                         "calibrates on whole images: leave --detector out" % source_path)
    with tempfile.TemporaryDirectory(prefix="edgepose-convert-") as scratch:
        # Intermediates go to scratch when the user named the ONNX output; otherwise (no -o, or -o naming
        # an engine) every ONNX is a conversion worth keeping, in the cache.
        folder = Path(scratch) if onnx_out is not None else cache_dir("detectors" if detector_source else "models")
        if from_onnx:
            fp32, base = _fp32_from_onnx(source_path, folder, onnx_out if precision == "fp32" else None, result, say,
                                         detector_source)
        else:
            fp32, base = _fp32_from_zoo(source, folder, onnx_out if precision == "fp32" else None, weights,
                                        random, seed, download, result, say)
        final = fp32
        if precision == "fp16":
            from edgepose.converters.fp16 import to_fp16
            from edgepose.converters.onnx_io import load_onnx, save_onnx

            say("Converting to FP16 ...")
            final = save_onnx(to_fp16(load_onnx(fp32)), onnx_out or folder / variant_name(base, "fp16", target))
            result.files.append(final)
        elif precision == "int8":
            from edgepose.converters.quantize import DEFAULT_METHOD

            say("Calibrating and quantising to INT8 (%s form) ..." % target)
            int8_out = onnx_out or folder / variant_name(base, "int8", target)
            if detector_source:
                from edgepose.converters.detector_int8 import make_detector_int8

                report = make_detector_int8(fp32, int8_out, calib_source=calib, target=target,
                                            method=method or DEFAULT_METHOD, force=force,
                                            fp16_fallback=fp16_fallback, fallback_path=onnx_out)
            else:
                from edgepose.converters.precision import make_int8

                report = make_int8(fp32, int8_out, calib_source=calib, target=target, method=method or DEFAULT_METHOD,
                                   force=force, detector=detector, fp16_fallback=fp16_fallback,
                                   fallback_path=onnx_out)
            result.notes += report.lines()[:-1]
            result.precision = report.precision
            final = report.path
            result.files.append(final)
        if engine:
            _engine(final, out if out is not None and is_engine(out) else final.with_suffix(".engine"),
                    max_batch, opt_batch, result, say)
        result.files = [f for f in result.files if not _inside(f, Path(scratch))]
    return result


def _inside(path: Path, folder: Path) -> bool:
    return folder.resolve() in path.resolve().parents


def _fp32_from_zoo(name: str, folder: Path, out: Optional[Path], weights: Optional[PathLike], random: bool,
                   seed: int, download: bool, result: ConvertResult, say: Callable[[str], None]):
    from edgepose.converters.export import export_zoo_model
    from edgepose.converters.zoo import get_entry

    entry = get_entry(name)
    base = entry.name + ("-random" if random else "")
    say("Building %s (FP32) ..." % entry.name)
    exported = export_zoo_model(entry, out or folder / variant_name(base, "fp32", ""), weights=weights,
                                random=random, seed=seed, download=download)
    result.files.append(exported.path)
    result.notes.append("%s: FP32 ONNX from weights %s" % (entry.name, exported.weights))
    return exported.path, base


def _is_detector(path: Path) -> bool:
    from edgepose.converters.yolox import is_yolox

    return is_yolox(path)


def _fp32_from_onnx(path: Path, folder: Path, out: Optional[Path], result: ConvertResult,
                    say: Callable[[str], None], detector: bool = False):
    from edgepose.converters.onnx_io import save_onnx
    from edgepose.converters.normalize import normalize_foreign
    from edgepose.converters.yolox import normalize_yolox

    if not path.is_file():
        raise InputError("%s is neither a zoo name (see `edgepose zoo`) nor an existing ONNX file" % path)
    base = path.stem
    if is_edgepose_model(path) and out is None:
        return path, base  # already an edgepose export: use it as it is
    say("Normalising %s (opset, BatchNorm folding, dynamic batch, metadata) ..." % path.name)
    target = out or folder / (base + "-edgepose.onnx")
    if target.resolve() == path.resolve():
        raise InputError("-o would overwrite the source %s; choose another output" % path)
    fp32 = save_onnx(normalize_yolox(path) if detector else normalize_foreign(path), target)
    result.files.append(fp32)
    result.notes.append("%s: normalised to an edgepose FP32 %s" % (path.name, "detector" if detector else "model"))
    return fp32, base


def _engine(onnx_path: Path, engine_path: Path, max_batch: int, opt_batch: int, result: ConvertResult,
            say: Callable[[str], None]) -> None:
    from edgepose.converters.tensorrt_build import build_engine, trtexec_command
    from edgepose.engine_info import tensorrt_available

    opt_batch = min(opt_batch, max_batch)
    if tensorrt_available():
        say("Building the TensorRT engine (this takes minutes) ...")
        result.files.append(build_engine(onnx_path, engine_path, max_batch=max_batch, opt_batch=opt_batch))
        return
    result.notes.append("TensorRT is not installed here: the ONNX is ready; build the engine on the "
                        "device (same GPU and TensorRT version that will run it) with either command:")
    result.engine_commands += [
        "edgepose convert %s --engine --max-batch %d -o %s" % (onnx_path, max_batch, engine_path),
        trtexec_command(onnx_path, engine_path, max_batch=max_batch, opt_batch=opt_batch),
    ]
