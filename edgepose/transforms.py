"""Pre-processing: person boxes -> normalised model input, as GluonCV evaluated its zoo.

Two crop conventions (reference §4.2 and §4.4), both vectorised over the N persons of a frame:

* ``simple`` (simple/mobile pose): box -> centre/scale (aspect fixed, x1.25) -> uniform-scale affine
  crop, no half-pixel term -> (x/255 - mean)/std.
* ``alphapose``: box expanded by 20 % / 30 %, integer-truncated (L, U, R, B); pixels outside the
  box are black; a similarity maps the padded box diagonal onto the crop corners -> x/255 - mean.

Bilinear warps reproduce OpenCV 4's fixed-point ``cv2.warpAffine`` (the one GluonCV ran) bit for bit
on any OpenCV version: the 1/32-pixel source coordinates are computed here and handed to
``cv2.remap``, whose fixed-point path applies the same 15-bit weights. (OpenCV 5's own
``warpAffine`` computes bilinear differently and is up to 5 grey levels off GluonCV's crops.)

Images are uint8 H x W x 3 in the caller's channel order; crops keep that order and
:func:`normalize` swaps R and B where the model wants the other one.
"""
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgepose.errors import InputError, InputTypeError
from edgepose.meta import ModelMeta

#: (height, width) of a crop or heatmap.
HW = Tuple[int, int]

_INTER_BITS = 5  # OpenCV: source coordinates are quantised to 1/32 pixel
_AB_BITS = 10  # OpenCV: per-row / per-column terms are rounded to 1/1024 pixel
_COORD_LIMIT = float(1 << 29)  # bound on fixed-point values (far outside any image): sums fit int32


@dataclass
class Crops:
    """A batch of model inputs plus what :func:`edgepose.decode.decode` needs to map back.

    ``batch``: (N, 3, H, W) float32, normalised, channel order of the model.
    ``boxes``: (N, 4) float64 x1, y1, x2, y2 after clipping to the image.
    ``center``/``scale``: (N, 2) float32 pixels (simple decoder), else None.
    ``alpha_boxes``: (N, 4) float64 integer-valued L, U, R, B (alphapose decoder), else None.
    """

    batch: np.ndarray
    boxes: np.ndarray
    center: Optional[np.ndarray] = None
    scale: Optional[np.ndarray] = None
    alpha_boxes: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.batch.shape[0])


def coco_xywh_to_xyxy(boxes_xywh: np.ndarray, img_w: int, img_h: int) -> np.ndarray:
    """COCO (N, 4) x, y, w, h -> (N, 4) float64 x1, y1, x2, y2 the way GluonCV's dataset does it.

    x2 = x + max(w - 1, 0), y2 = y + max(h - 1, 0), then clipped to [0, W-1] x [0, H-1].
    """
    b = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    xyxy = np.concatenate([b[:, :2], b[:, :2] + np.maximum(b[:, 2:] - 1.0, 0.0)], axis=1)
    return clip_boxes(xyxy, img_w, img_h)


def clip_boxes(boxes_xyxy: np.ndarray, img_w: int, img_h: int) -> np.ndarray:
    """Clip (N, 4) x1, y1, x2, y2 to [0, img_w-1] x [0, img_h-1] (GluonCV's rule) -> float64 copy."""
    b = np.array(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    np.clip(b[:, 0::2], 0.0, img_w - 1.0, out=b[:, 0::2])
    np.clip(b[:, 1::2], 0.0, img_h - 1.0, out=b[:, 1::2])
    return b


def boxes_to_center_scale(boxes_xyxy: np.ndarray, aspect_ratio: float,
                          enlarge: float = 1.25) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 4) x1, y1, x2, y2 -> center (N, 2) float32, scale (N, 2) float32, both in pixels.

    ``aspect_ratio`` = input W / H. The shorter side (relative to that ratio) is grown to it, then
    both sides are multiplied by ``enlarge`` (pixel_std 1), with GluonCV's float32 rounding.
    """
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    center = np.stack([b[:, 0] + w * 0.5, b[:, 1] + h * 0.5], axis=1).astype(np.float32)
    fixed_w = np.where(w < aspect_ratio * h, h * aspect_ratio, w)
    fixed_h = np.where(w > aspect_ratio * h, w / aspect_ratio, h)
    scale = np.stack([fixed_w, fixed_h], axis=1).astype(np.float32) * np.float32(enlarge)
    return center, scale


def affine_matrices(center: np.ndarray, scale: np.ndarray, out_hw: HW) -> np.ndarray:
    """Forward image -> crop matrices (N, 2, 3) float64: [[s, 0, W/2 - s*cx], [0, s, H/2 - s*cy]].

    s = W / scale_w. The box centre lands on (W/2, H/2) (no half-pixel term). GluonCV builds the
    same matrix from float32 points; the two differ by up to 6e-5 in the translation.
    """
    out_h, out_w = out_hw
    c = np.asarray(center, dtype=np.float64).reshape(-1, 2)
    s = out_w / np.asarray(scale, dtype=np.float64).reshape(-1, 2)[:, 0]
    m = np.zeros((c.shape[0], 2, 3), dtype=np.float64)
    m[:, 0, 0] = s
    m[:, 1, 1] = s
    m[:, 0, 2] = out_w / 2.0 - s * c[:, 0]
    m[:, 1, 2] = out_h / 2.0 - s * c[:, 1]
    return m


def _fixed_point_terms(matrices: np.ndarray, out_hw: HW) -> Tuple[np.ndarray, ...]:
    """Per-row and per-column parts of OpenCV 4's fixed-point source coordinates (1/1024 pixel).

    matrices: (N, 2, 3) forward image -> crop. Returns row_x, row_y (N, H) and col_x, col_y (N, W),
    int32, such that the source x of crop pixel (u, v) in 1/32 pixel is (row_x[v] + col_x[u]) >> 5.
    """
    out_h, out_w = out_hw
    m = np.asarray(matrices, dtype=np.float64).reshape(-1, 2, 3)
    a, b, c = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    d, e, f = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    det = a * e - b * d
    inv_det = np.divide(1.0, det, out=np.zeros_like(det), where=det != 0)
    i11, i12, i21, i22 = e * inv_det, b * -inv_det, d * -inv_det, a * inv_det
    t1 = -i11 * c - i12 * f
    t2 = -i21 * c - i22 * f
    cols = np.arange(out_w, dtype=np.float64)
    rows = np.arange(out_h, dtype=np.float64)
    scale = float(1 << _AB_BITS)
    half_step = 1 << (_AB_BITS - _INTER_BITS - 1)

    def fixed(v: np.ndarray) -> np.ndarray:
        return np.rint(np.clip(v, -_COORD_LIMIT, _COORD_LIMIT)).astype(np.int32)

    row_x = fixed((i12[:, None] * rows + t1[:, None]) * scale) + half_step
    row_y = fixed((i22[:, None] * rows + t2[:, None]) * scale) + half_step
    return row_x, row_y, fixed(i11[:, None] * cols * scale), fixed(i21[:, None] * cols * scale)


def _combine(row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """(H,) row and (W,) column terms -> 1/32-pixel coordinates, shaped (1, W), (H, 1) or (H, W).

    Axis-aligned crops keep one term constant, so their maps stay 1-D until the final broadcast.
    """
    shift = _AB_BITS - _INTER_BITS
    if np.all(row == row[0]):
        return ((row[0] + col) >> shift)[None, :]
    if np.all(col == col[0]):
        return ((row + col[0]) >> shift)[:, None]
    return (row[:, None] + col[None, :]) >> shift


def _warp_fixed_point(sources: Sequence[np.ndarray], origins: np.ndarray,
                      matrices: np.ndarray, out_hw: HW) -> np.ndarray:
    """Bilinear warp of one source per crop, constant border 0 -> uint8 (N, H, W, 3).

    sources[i]: uint8 (h_i, w_i, 3) region of the image whose top-left pixel is origins[i] (x, y);
    matrices: (N, 2, 3) forward image -> crop in full-image coordinates.
    """
    out_h, out_w = out_hw
    out = np.zeros((len(sources), out_h, out_w, 3), dtype=np.uint8)
    row_x, row_y, col_x, col_y = _fixed_point_terms(matrices, out_hw)
    frac_mask = (1 << _INTER_BITS) - 1
    xy = np.empty((out_h, out_w, 2), dtype=np.int16)
    frac = np.empty((out_h, out_w), dtype=np.uint16)
    for i, src in enumerate(sources):
        src_h, src_w = src.shape[:2]
        if src_h == 0 or src_w == 0:
            continue
        fx = _combine(row_x[i], col_x[i])
        fy = _combine(row_y[i], col_y[i])
        # Pixels more than one step outside read only border; clipping keeps int16 in range.
        # Casting the (1, W) / (H, 1) parts before broadcasting keeps the full-size work small.
        xy[..., 0] = np.clip((fx >> _INTER_BITS) - int(origins[i][0]), -2, src_w).astype(np.int16)
        xy[..., 1] = np.clip((fy >> _INTER_BITS) - int(origins[i][1]), -2, src_h).astype(np.int16)
        np.bitwise_or(((fy & frac_mask) << _INTER_BITS).astype(np.uint16),
                      (fx & frac_mask).astype(np.uint16), out=frac)
        cv2.remap(src, xy, frac, cv2.INTER_LINEAR, dst=out[i],
                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out


def warp_crops(image: np.ndarray, matrices: np.ndarray, out_hw: HW) -> np.ndarray:
    """Warp uint8 (h, w, 3) ``image`` by each (N, 2, 3) forward matrix -> uint8 (N, H, W, 3).

    Bit-exact with OpenCV 4's ``cv2.warpAffine(image, M, (W, H), flags=cv2.INTER_LINEAR)``
    (default constant border 0), which is what GluonCV ran. Like it, images are limited to
    32767 pixels a side (int16 coordinate maps).
    """
    image = np.ascontiguousarray(image)
    m = np.asarray(matrices, dtype=np.float64).reshape(-1, 2, 3)
    n = m.shape[0]
    return _warp_fixed_point([image] * n, np.zeros((n, 2), dtype=np.int64), m, out_hw)


def crop_persons(image: np.ndarray, center: np.ndarray, scale: np.ndarray, out_hw: HW) -> np.ndarray:
    """Simple-pose crops: uint8 (h, w, 3) image, (N, 2) center/scale -> uint8 (N, H, W, 3).

    Outside the image the crop is 0. Equal to GluonCV's crops on all 38 fixture crops; because
    :func:`affine_matrices` differs from GluonCV's float32-built matrix by up to 6e-5, a pixel can
    in principle land in the neighbouring 1/32 quantisation step (a difference of a grey level or so).
    """
    return warp_crops(image, affine_matrices(center, scale, out_hw), out_hw)


def alphapose_boxes(boxes_xyxy: np.ndarray, img_w: int, img_h: int) -> np.ndarray:
    """AlphaPose box expansion: (N, 4) x1, y1, x2, y2 -> (N, 4) float64 integer-valued L, U, R, B.

    Boxes are clipped to the image, grown by 0.2 of their size (0.3 when width <= 100), truncated to
    integers; R >= L + 5 and B >= U + 5 where the image allows it.
    """
    b = clip_boxes(boxes_xyxy, img_w, img_h)
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    half_rate = np.where(w > 100, 0.2, 0.3) / 2
    left = np.floor(np.maximum(0.0, b[:, 0] - w * half_rate))
    up = np.floor(np.maximum(0.0, b[:, 1] - h * half_rate))
    right = np.floor(np.minimum(img_w - 1.0, np.maximum(left + 5, b[:, 2] + w * half_rate)))
    bottom = np.floor(np.minimum(img_h - 1.0, np.maximum(up + 5, b[:, 3] + h * half_rate)))
    return np.stack([left, up, right, bottom], axis=1)


def alphapose_affine(boxes_lurb: np.ndarray, out_hw: HW) -> np.ndarray:
    """AlphaPose crop matrices (N, 2, 3) float64, image -> crop.

    The box (inclusive pixels L..R-1, U..B-1) is padded (floor) to the crop aspect; the similarity
    sends its top-left corner to (0, 0) and its bottom-right corner to (W-1, H-1).
    """
    out_h, out_w = out_hw
    b = np.asarray(boxes_lurb, dtype=np.float64).reshape(-1, 4)
    h = b[:, 3] - 1 - b[:, 1]
    w = b[:, 2] - 1 - b[:, 0]
    len_h = np.maximum(h, w * out_h / out_w)
    len_w = len_h * out_w / out_h
    pad_h = np.floor((len_h - h) / 2)
    pad_w = np.floor((len_w - w) / 2)
    x0, y0 = b[:, 0] - pad_w, b[:, 1] - pad_h
    src_diag = (b[:, 2] - 1 + pad_w - x0) + 1j * (b[:, 3] - 1 + pad_h - y0)
    rot_scale = ((out_w - 1) + 1j * (out_h - 1)) / src_diag
    shift = -rot_scale * (x0 + 1j * y0)
    m = np.empty((b.shape[0], 2, 3), dtype=np.float64)
    m[:, 0, 0] = m[:, 1, 1] = rot_scale.real
    m[:, 0, 1] = -rot_scale.imag
    m[:, 1, 0] = rot_scale.imag
    m[:, 0, 2] = shift.real
    m[:, 1, 2] = shift.imag
    return m


def alphapose_crop(image: np.ndarray, boxes_lurb: np.ndarray, out_hw: HW) -> np.ndarray:
    """AlphaPose crops: uint8 (h, w, 3) image, (N, 4) L, U, R, B -> uint8 (N, H, W, 3).

    Only pixels in rows U..B-1 and columns L..R-1 are read; everything else counts as 0 (GluonCV
    zeroes the image outside the box before warping). An empty box gives an all-zero crop.
    """
    image = np.ascontiguousarray(image)
    b = np.asarray(boxes_lurb, dtype=np.float64).reshape(-1, 4).astype(np.int64)
    sources = [image[max(top, 0):max(bottom, 0), max(left, 0):max(right, 0)]
               for left, top, right, bottom in b]
    origins = np.maximum(b[:, :2], 0)
    return _warp_fixed_point(sources, origins, alphapose_affine(boxes_lurb, out_hw), out_hw)


def normalization_lut(mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(3, 256) float32 table: lut[c][v] = (v/255 - mean[c]) / std[c], computed in float32."""
    v = np.arange(256, dtype=np.float32) / np.float32(255)
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1)
    return (v[None, :] - m) / s


def normalize(crops_u8: np.ndarray, mean: Sequence[float], std: Sequence[float],
              swap_rb: bool) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W): (x/255 - mean)/std per channel, via a lookup table.

    ``mean``/``std`` are in the model's channel order; ``swap_rb`` reverses the crops' channels first
    (BGR crops for an RGB model or the reverse). Equal bit for bit to MXNet's to_tensor + normalize.
    """
    crops = np.asarray(crops_u8)
    if crops.dtype != np.uint8:
        raise InputTypeError("normalize expects uint8 crops; got dtype %s" % crops.dtype)
    if crops.ndim != 4 or crops.shape[3] != 3:
        raise InputError("normalize expects crops of shape (N, H, W, 3); got %s" % (crops.shape,))
    n, h, w, _ = crops.shape
    out = np.empty((n, 3, h, w), dtype=np.float32)
    if out.size == 0:
        return out
    lut = normalization_lut(mean, std)
    for i in range(n):
        planes = cv2.split(np.ascontiguousarray(crops[i]))
        for c in range(3):
            cv2.LUT(planes[2 - c if swap_rb else c], lut[c].reshape(1, 256), dst=out[i, c])
    return out


def flip_batch(batch: np.ndarray) -> np.ndarray:
    """Mirror a (N, 3, H, W) input batch along its width for the flip test -> new contiguous array."""
    return np.ascontiguousarray(np.asarray(batch)[..., ::-1])


def _as_bgr_or_rgb_image(image: object) -> np.ndarray:
    """Validate ``image`` and return a contiguous uint8 (h, w, 3) array in the caller's channel order.

    Grayscale (h, w) or (h, w, 1) is replicated to 3 channels; (h, w, 4) loses its 4th (alpha)
    channel without compositing.
    """
    if not isinstance(image, np.ndarray):
        raise InputTypeError("image must be a NumPy array (H, W, 3) uint8, as cv2.imread returns; "
                             "got %s" % type(image).__name__)
    if image.dtype != np.uint8:
        raise InputTypeError(
            "image has dtype %s; edgepose expects uint8 pixels 0..255. Convert it, e.g. "
            "np.clip(image * 255, 0, 255).astype(np.uint8) for a float image in [0, 1]" % image.dtype)
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        channels = image.shape[2]
    elif image.ndim == 2:
        channels = 1
    else:
        raise InputError("image must have shape (H, W, 3), or (H, W) / (H, W, 1) grayscale, or "
                         "(H, W, 4) with alpha; got shape %s" % (image.shape,))
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError("image is empty (shape %s)" % (image.shape,))
    image = np.ascontiguousarray(image)
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def _checked_boxes(boxes: object, img_w: int, img_h: int) -> np.ndarray:
    """Validate (N, 4) / (N, 5) boxes and return them clipped to the image: (N, 4) float64 x1, y1, x2, y2."""
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputTypeError("boxes must be numbers, shape (N, 4) x1, y1, x2, y2 or (N, 5) with a "
                             "score column; could not read them as floats (%s)" % err) from err
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] not in (4, 5):
        raise InputError("boxes must have shape (N, 4) x1, y1, x2, y2 or (N, 5) with a score "
                         "column; got shape %s (for a single box pass boxes[None])" % (arr.shape,))
    bad = np.flatnonzero(~np.isfinite(arr[:, :4]).all(axis=1))
    if bad.size:
        raise InputError("box %s has a NaN or infinite coordinate (%s); drop it before calling"
                         % (", ".join(map(str, bad)), arr[bad[0], :4].tolist()))
    clipped = clip_boxes(arr[:, :4], img_w, img_h)
    empty = np.flatnonzero((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    if empty.size:
        raise InputError(
            "box %s has no area inside the %dx%d image (x2 <= x1 or y2 <= y1 after clipping to "
            "[0, W-1] x [0, H-1]; first: %s); drop such boxes before calling"
            % (", ".join(map(str, empty)), img_w, img_h, arr[empty[0], :4].tolist()))
    return clipped


def preprocess(image: np.ndarray, boxes_xyxy: np.ndarray, meta: ModelMeta, image_is_rgb: bool) -> Crops:
    """Frame + person boxes -> :class:`Crops` (model input batch and decode parameters).

    image: uint8 (h, w, 3) in BGR (``image_is_rgb=False``, as cv2.imread gives) or RGB order.
    Grayscale (h, w) or (h, w, 1) is replicated to 3 channels; (h, w, 4) BGRA/RGBA drops alpha
    (no compositing). Other dtypes raise InputTypeError, other shapes InputError.

    boxes_xyxy: (N, 4) x1, y1, x2, y2 or (N, 5) whose 5th column (a score) is ignored; N = 0 gives an
    empty (0, 3, H, W) batch. Boxes are clipped to [0, w-1] x [0, h-1] as GluonCV does, so a box partly
    outside the image is cropped around its visible part. NaN/inf coordinates, and boxes with no area
    left after clipping (x2 <= x1, y2 <= y1, or entirely outside), raise InputError naming their indices.

    The crop convention and normalisation come from ``meta`` (decoder, input_size, mean, std,
    color_order).
    """
    img = _as_bgr_or_rgb_image(image)
    img_h, img_w = img.shape[:2]
    boxes = _checked_boxes(boxes_xyxy, img_w, img_h)
    out_h, out_w = meta.input_size
    swap_rb = image_is_rgb != (meta.color_order == "RGB")
    if meta.decoder == "alphapose":
        lurb = alphapose_boxes(boxes, img_w, img_h)
        crops = alphapose_crop(img, lurb, (out_h, out_w))
        return Crops(normalize(crops, meta.mean, meta.std, swap_rb), boxes, alpha_boxes=lurb)
    center, scale = boxes_to_center_scale(boxes, out_w / out_h)
    crops = crop_persons(img, center, scale, (out_h, out_w))
    return Crops(normalize(crops, meta.mean, meta.std, swap_rb), boxes, center=center, scale=scale)


def preprocess_many(images: Sequence[np.ndarray], boxes: Sequence[np.ndarray], meta: ModelMeta,
                    image_is_rgb: bool, map_each: Optional[Callable[..., list]] = None) -> Tuple[Crops, List[int]]:
    """Several frames, each with its person boxes -> one :class:`Crops` batch over all their persons (in
    order: the first image's persons first) and the number of persons per image. Each image and its boxes
    are checked and cropped as :func:`preprocess` does; one backend call can then run the whole batch.
    ``map_each(fn, items)``: runs the per-image work, e.g. over threads (:meth:`Backend.map`)."""
    if len(images) != len(boxes) or not len(images):
        raise InputError("give one box array per image (and at least one image); got %d images and %d box "
                         "arrays" % (len(images), len(boxes)))

    def crop(pair: Tuple[np.ndarray, np.ndarray]) -> Crops:
        return preprocess(pair[0], pair[1], meta, image_is_rgb)

    pairs = list(zip(images, boxes))
    parts = map_each(crop, pairs) if map_each is not None else [crop(pair) for pair in pairs]
    if len(parts) == 1:
        return parts[0], [len(parts[0])]

    def joined(name: str) -> Optional[np.ndarray]:
        values = [getattr(part, name) for part in parts]
        return None if values[0] is None else np.concatenate(values)

    crops = Crops(np.concatenate([part.batch for part in parts]), np.concatenate([part.boxes for part in parts]),
                  joined("center"), joined("scale"), joined("alpha_boxes"))
    return crops, [len(part) for part in parts]
