"""Person boxes for top-down pose: a YOLOX detector behind the same backends as the pose model.

Works with YOLOX models: input ``(1 or N, 3, H, W)`` float32 BGR in 0..255, output
``(1 or N, A, 5 + C)`` with rows ``(x, y, w, h, objectness, C class probabilities)`` over the stride
8/16/32 grids, boxes raw (the default of YOLOX's ``export_onnx.py`` and the official release files) or
decoded to pixels in the graph (``--decode_in_inference``; ``edgepose.decode_in_graph`` in a converted
model's metadata, else found by running the model once), as an ONNX file (ONNX Runtime), a TensorRT
engine built from one, or a model on a Triton server (:mod:`edgepose.backends`). The detector
letterboxes, decodes the grids, keeps the wanted classes and runs class-aware NMS; a model with a
dynamic batch detects in several images with one call (:meth:`YoloxDetector.detect_batch`).
"""
import os
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from edgepose.backends import Backend, backend_for, open_backend
from edgepose.cache import cache_dir, cache_root
from edgepose.download import download as download_file
from edgepose.errors import InputError, InputTypeError, ModelFileError
from edgepose.fileio import existing_file
from edgepose.meta import prop_value
from edgepose.models import parse_file_name

PathLike = Union[str, "os.PathLike[str]"]

STRIDES = (8, 16, 32)
PAD_VALUE = 114

YOLOX_NANO_FILE = "yolox_nano.onnx"
YOLOX_RELEASE_URL = "https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0"
#: SHA-256 of the official 0.1.1rc0 ``yolox_nano.onnx`` release asset (3,659,407 bytes).
YOLOX_NANO_SHA256 = "c789161ed43c8269fcd4e67c67eeeb4e80c622da2eb296a20bc6007bd18a0b7d"

#: Environment variable naming the YOLOX .onnx to use when a command is given none.
DETECTOR_ENV = "EDGEPOSE_DETECTOR"
YOLOX_RELEASES = "https://github.com/Megvii-BaseDetection/YOLOX/releases"


def letterbox(image: np.ndarray, size: Tuple[int, int]) -> Tuple[np.ndarray, float]:
    """YOLOX letterbox: scale (H, W, 3) by r = min(h/H, w/W), paste top-left on a (h, w, 3)
    canvas filled with 114. Returns (canvas, r); network pixels / r = image pixels."""
    h_in, w_in = size
    h, w = image.shape[:2]
    r = min(h_in / h, w_in / w)
    new_h, new_w = max(1, int(h * r)), max(1, int(w * r))
    canvas = np.full((h_in, w_in, 3), PAD_VALUE, np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return canvas, r


def make_grid(size: Tuple[int, int], strides: Sequence[int] = STRIDES) -> Tuple[np.ndarray, np.ndarray]:
    """Cell offsets (A, 2) as (x, y) and strides (A, 1), in YOLOX's row order: stride 8 first,
    each level row-major. A = sum((H // s) * (W // s))."""
    cells, steps = [], []
    for s in strides:
        ys, xs = np.mgrid[0:size[0] // s, 0:size[1] // s]
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        steps.append(np.full((xs.size, 1), s))
    return np.concatenate(cells).astype(np.float32), np.concatenate(steps).astype(np.float32)


def decode_boxes(pred: np.ndarray, grid: np.ndarray, stride: np.ndarray) -> np.ndarray:
    """Raw YOLOX rows (N, >=4) -> boxes (N, 4) x1, y1, x2, y2 in network-input pixels."""
    xy = (pred[:, :2] + grid) * stride
    half_wh = np.exp(pred[:, 2:4]) * stride / 2
    return np.concatenate([xy - half_wh, xy + half_wh], axis=1)


def boxes_in_pixels(pred: np.ndarray) -> bool:
    """Whether YOLOX rows (A, 5 + C) of a grey canvas carry decoded boxes (centres in pixels: their
    median is far beyond the raw grid offsets, which stay within a cell or two)."""
    return bool(np.median(np.abs(pred[:, :2])) > STRIDES[0])


def nms(
    boxes: np.ndarray, scores: np.ndarray, iou_thresh: float, labels: Optional[np.ndarray] = None
) -> np.ndarray:
    """Greedy NMS, class-aware when ``labels`` (N,) are given: boxes with different labels never
    suppress each other. boxes (N, 4) x1, y1, x2, y2, scores (N,) -> kept indices (K,), best first.
    A box is dropped when its IoU with a kept, higher-scored box is above ``iou_thresh``.
    Runs OpenCV's NMS, over 10x faster than a NumPy loop on YOLOX's candidate counts."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    boxes = boxes.astype(np.float64)
    if labels is not None:
        boxes += labels[:, None] * (boxes.max() - boxes.min() + 1)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    keep = cv2.dnn.NMSBoxes(xywh, scores.astype(np.float32), 0.0, iou_thresh)
    keep = np.asarray(keep, np.int64).reshape(-1)  # OpenCV < 4.6 returns (K, 1)
    return keep[np.argsort(-scores[keep], kind="stable")]


class YoloxDetector:
    """YOLOX detector returning boxes of the wanted COCO classes (person by default).

    ``model_path``: a YOLOX ``.onnx`` (ONNX Runtime), a TensorRT engine built from one
    (``.engine``/``.plan``/``.trt``), or ``triton://HOST:PORT/NAME`` (a YOLOX model on a Triton server,
    e.g. the one ``edgepose export-triton --detector`` writes); ``backend`` overrides the choice made
    from the name, as for :class:`edgepose.Runtime`. ``providers`` and ``intra_op_threads`` are ONNX
    Runtime's (default: the CPU); other keyword arguments go to the backend (TensorRT: ``device``;
    Triton: ``protocol``, ``timeout``, ``wait``...). ``input_size`` is the network's (H, W), read from
    the model's input shape; ``batched`` whether its batch is dynamic (:meth:`detect_batch` then runs
    one call); ``decode_in_graph`` whether its boxes come out decoded. One detector may be shared by threads.
    """

    def __init__(
        self,
        model_path: PathLike,
        *,
        score_thresh: float = 0.5,
        nms_thresh: float = 0.45,
        classes: Sequence[int] = (0,),
        providers: Optional[Sequence] = None,
        intra_op_threads: Optional[int] = None,
        backend: str = "auto",
        **backend_options: Any,
    ):
        if not 0.0 <= score_thresh <= 1.0 or not 0.0 < nms_thresh <= 1.0:
            raise InputError(
                f"score_thresh must be in [0, 1] and nms_thresh in (0, 1], "
                f"got {score_thresh} and {nms_thresh}"
            )
        model = os.fspath(model_path)
        #: The model file (a Path), or the triton:// URL (a str).
        self.model_path: Union[Path, str] = model if "://" in model else Path(model)
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.backend = _open_backend(model, backend, providers, intra_op_threads, backend_options)
        self._lock = threading.Lock()  # a TensorRT context runs one batch at a time
        try:
            self.input_size = self._check_input()
            self._grid, self._stride = make_grid(self.input_size)
            self.num_classes = self._check_output()
            self.classes = np.array(list(classes), dtype=np.int64)
            if self.classes.size == 0 or self.classes.min() < 0 or self.classes.max() >= self.num_classes:
                raise InputError(
                    f"classes must be a non-empty list of ids in [0, {self.num_classes}), got {classes!r}"
                )
        except BaseException:
            self.backend.close()
            raise

    def detect(self, image: np.ndarray, image_is_rgb: bool = False) -> np.ndarray:
        """Detect in one (H, W, 3) uint8 image (BGR, or RGB with ``image_is_rgb``).

        Returns (N, 5) float32 rows x1, y1, x2, y2, score in image pixels, clipped to the
        image, best score first; (0, 5) when nothing is found.
        """
        _check_image(image)
        return self.detect_batch([image], image_is_rgb)[0]

    def detect_batch(self, images: Sequence[np.ndarray], image_is_rgb: bool = False) -> List[np.ndarray]:
        """:meth:`detect` for several images: one model call for all of them when the model's batch is
        dynamic (in chunks of the backend's batch limit), else one call per image. Returns one (N, 5)
        array per image, in order."""
        for image in images:
            _check_image(image)
        boxed = [letterbox(image, self.input_size) for image in images]
        if not boxed:
            return []
        blob = np.stack([canvas for canvas, _ in boxed]).transpose(0, 3, 1, 2)
        if image_is_rgb:
            blob = blob[:, ::-1]
        blob = blob.astype(np.float32)
        if self.batched:
            with self._lock:
                preds = self.backend.run_chunked(blob)
        else:
            preds = np.concatenate([self._run(blob[i:i + 1]) for i in range(len(blob))])
        return [self._postprocess(pred, ratio, image.shape[:2])
                for pred, (_, ratio), image in zip(preds, boxed, images)]

    def close(self) -> None:
        """Release the backend (its session, device buffers or server connections)."""
        self.backend.close()

    def __enter__(self) -> "YoloxDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, blob: np.ndarray) -> np.ndarray:
        with self._lock:
            return self.backend.run(blob)

    def _postprocess(self, pred: np.ndarray, ratio: float, image_hw: Tuple[int, int]) -> np.ndarray:
        """Raw head output (A, 5 + C) -> (N, 5) detections in image pixels."""
        probs = pred[:, 5 + self.classes] * pred[:, 4:5]
        labels = probs.argmax(axis=1)
        scores = probs[np.arange(len(probs)), labels]
        cand = np.flatnonzero(scores > self.score_thresh)
        if self.decode_in_graph:
            xy, half_wh = pred[cand, :2], pred[cand, 2:4] / 2
            boxes = np.concatenate([xy - half_wh, xy + half_wh], axis=1) / ratio
        else:
            boxes = decode_boxes(pred[cand], self._grid[cand], self._stride[cand]) / ratio
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, image_hw[1])
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, image_hw[0])
        nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores, labels = boxes[nonempty], scores[cand][nonempty], labels[cand][nonempty]
        keep = nms(boxes, scores, self.nms_thresh, labels)
        return np.concatenate([boxes[keep], scores[keep, None]], axis=1).astype(np.float32)

    def _check_input(self) -> Tuple[int, int]:
        """The input's fixed (H, W); ModelFileError unless it is (1 or N, 3, H, W)."""
        shape = self.backend.input_shape
        if (
            shape[0] not in (1, None)
            or shape[1] != 3
            or not all(isinstance(d, int) and d % STRIDES[-1] == 0 for d in shape[2:])
        ):
            raise ModelFileError(
                f"{self.model_path} is not a YOLOX detector this SDK can run: it needs one float32 input of "
                f"fixed shape (1, 3, H, W) with H and W multiples of 32, got "
                f"{tuple('N' if d is None else d for d in shape)}. Re-export it with a fixed input size."
            )
        self.batched = shape[0] is None
        return int(shape[2]), int(shape[3])  # type: ignore[arg-type]

    def _check_output(self) -> int:
        """Run once on a grey canvas (also a warm-up) and check the output is YOLOX's raw head
        (1, A, 5 + C) with probabilities in columns 4.. and whether its boxes are decoded. Returns C."""
        outputs = self.backend.outputs
        out = self._run(np.full((1, 3) + self.input_size, PAD_VALUE, np.float32))
        anchors = len(self._grid)
        problem = None
        if len(outputs) != 1 or out.ndim != 3 or out.shape[:2] != (1, anchors) or out.shape[2] < 6:
            problem = (
                f"it needs one output of shape (1, {anchors}, 5 + classes) for a {self.input_size} input, "
                f"got {list(outputs.items())} -> {out.shape}"
            )
        elif out[0, :, 4:].min() < 0 or out[0, :, 4:].max() > 1:
            problem = "its objectness/class columns are not probabilities in [0, 1] (no sigmoid in the head)"
        if problem:
            raise ModelFileError(f"{self.model_path} does not look like a YOLOX ONNX export: {problem}.")
        decoded = prop_value(self.backend.metadata, "decode_in_graph")
        self.decode_in_graph = boxes_in_pixels(out[0]) if decoded is None else bool(decoded)
        return out.shape[2] - 5


def _open_backend(model: str, backend: str, providers: Optional[Sequence], threads: Optional[int],
                  options: Dict[str, Any]) -> Backend:
    """The detector's backend. A file must exist (ModelFileError naming what to pass); ONNX Runtime runs
    on the CPU unless ``providers`` say otherwise; ``providers``/``threads`` on another backend: InputError."""
    name = backend_for(model) if backend == "auto" else backend
    if "://" not in model:
        _existing_model(model)
    if name == "onnxruntime":
        options = dict(options, providers=list(providers or ["CPUExecutionProvider"]), threads=threads)
    elif providers is not None or threads is not None:
        raise InputError(f"providers and intra_op_threads are ONNX Runtime options, but {model} runs on the {name} "
                         f"backend; leave them out")
    return open_backend(model, name, **options)


def _existing_model(path: PathLike) -> Path:
    """``path`` when it is a file, else a ModelFileError saying what a detector can be."""
    return existing_file(path, "YOLOX model file", f"pass the path of a YOLOX .onnx file, e.g. {YOLOX_NANO_FILE} "
                         f"from {YOLOX_RELEASES}, a TensorRT engine built from one, or a triton://HOST:PORT/NAME URL",
                         ModelFileError)


def _check_image(image: np.ndarray) -> None:
    """InputTypeError unless ``image`` is a (H, W, 3) uint8 array; InputError when it is empty."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = type(image).__name__
        if isinstance(image, np.ndarray):
            got = f"{image.dtype} array of shape {image.shape}"
        raise InputTypeError(f"the detector needs a (H, W, 3) uint8 BGR/RGB image, got {got}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"the detector got an empty image of shape {image.shape}")


def download_yolox_nano(
    dest_dir: Optional[PathLike] = None,
    *,
    base_url: Optional[str] = None,
    timeout: float = 15.0,
    sha256: str = YOLOX_NANO_SHA256,
    option: str = "--detector FILE",
) -> Path:
    """Download the official YOLOX-Nano ONNX (416x416, COCO-80) with a progress bar and check its SHA-256.

    ``dest_dir`` defaults to ``cache_dir("detectors")``. ``base_url`` (else
    ``$EDGEPOSE_YOLOX_URL``, else the YOLOX 0.1.1rc0 release) is the folder URL the file name
    ``yolox_nano.onnx`` is appended to; a mirror must serve the same file, or pass its ``sha256``.
    ``option``: how the calling command takes a detector file, named in the offline advice.
    Raises DownloadError; returns the file's path.
    """
    base = base_url or os.environ.get("EDGEPOSE_YOLOX_URL") or YOLOX_RELEASE_URL
    dest = Path(dest_dir) if dest_dir is not None else cache_dir("detectors")
    return download_file(
        f"{base.rstrip('/')}/{YOLOX_NANO_FILE}", dest / YOLOX_NANO_FILE,
        sha256=sha256, timeout=timeout, hint=f"Offline? {offline_advice(option)}",
    )


def offline_advice(option: str = "--detector FILE") -> str:
    """The ways to give edgepose a person detector without a download (``option``: the command's own)."""
    return (
        f"Get {YOLOX_NANO_FILE} from {YOLOX_RELEASES} (or export a YOLOX model with YOLOX's "
        f"tools/export_onnx.py), then either put it in {cache_root() / 'detectors'}, set {DETECTOR_ENV}=FILE, "
        f"or pass {option}."
    )


def cached_detector() -> Optional[Path]:
    """A YOLOX .onnx in ``cache_dir("detectors")``: ``yolox_nano.onnx`` if there, else the newest FP32
    ``*.onnx`` (``edgepose convert`` writes its FP16/INT8 conversions there too, named ``-fp16``/``-int8``/
    ``-int8-cpu``: those are used when named, never by default)."""
    folder = cache_dir("detectors")
    known = folder / YOLOX_NANO_FILE
    if known.is_file():
        return known
    others = [p for p in folder.glob("*.onnx") if p.is_file() and not p.name.startswith(".")
              and parse_file_name(p.name)[1] == "fp32"]
    return max(others, key=lambda p: (p.stat().st_mtime, p.name)) if others else None


def default_detector_path(download: bool = True, option: str = "--detector FILE") -> Path:
    """The person detector for a command given none, looked up in this order:

    1. ``$EDGEPOSE_DETECTOR``, the path of a YOLOX .onnx (ModelFileError when it is not a file);
    2. the cache folder ``$EDGEPOSE_HOME/detectors`` (:func:`cached_detector`);
    3. YOLOX-Nano downloaded into that folder (when ``download``), SHA-256 checked.

    Offline, the error lists every way to give one (``option``: how the calling command takes a file).
    """
    env = os.environ.get(DETECTOR_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ModelFileError(
                f"{DETECTOR_ENV}={env} is not a file{' (it is a folder)' if path.is_dir() else ''}: point it at "
                f"a YOLOX .onnx, or unset it to use the cache or the download."
            )
        return path
    cached = cached_detector()
    if cached is not None:
        return cached
    if not download:
        raise ModelFileError(f"No person detector in the cache and downloads are off. {offline_advice(option)}")
    return download_yolox_nano(option=option)


def detector_model(given: Optional[str] = None, option: str = "--detector FILE") -> str:
    """The person detector a command runs: ``given`` (a file, which must exist, or a ``triton://`` URL),
    else :func:`default_detector_path` (``option`` names the command's way to give one in its advice)."""
    if given is None:
        return str(default_detector_path(option=option))
    return given if "://" in given else str(_existing_model(Path(given).expanduser()))
