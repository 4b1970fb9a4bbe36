"""Prompts from existing labels: query points inside boxes, masks or at keypoints."""

from __future__ import annotations

import fiftyone as fo
import numpy as np
from fiftyone import ViewField as F

from ..trackers.base import PromptError
from .labels import DatasetError, Sources, _name, _type_name

_PROMPT_TYPES = (fo.Detections, fo.Detection, fo.Segmentation, fo.Keypoints, fo.Keypoint)


def check_prompt_field(samples, prompt_field: str) -> str:
    """The frame field name of ``prompt_field`` ("frames." optional); raises `DatasetError` if
    it is missing or holds labels that cannot prompt (not detections, masks or keypoints)."""
    name = prompt_field[len("frames."):] if prompt_field.startswith("frames.") else prompt_field
    schema = samples.get_frame_field_schema() or {}
    if name not in schema:
        raise DatasetError(
            f"dataset '{_name(samples)}' has no frame field '{name}' to prompt from"
            f" (frame fields: {', '.join(sorted(schema)) or 'none'})"
        )
    doc_type = getattr(schema[name], "document_type", None)
    if doc_type not in _PROMPT_TYPES:
        raise DatasetError(
            f"prompt field '{name}' holds {_type_name(schema[name])}; prompts need "
            "Detections, Detection, Segmentation, Keypoints or Keypoint labels"
        )
    return name


def _cell_centres(g: int) -> np.ndarray:
    """``(g*g, 2)`` points (u, v) in [0, 1] at the centres of a g x g grid, row by row."""
    c = (np.arange(g, dtype=np.float64) + 0.5) / g
    v, u = np.meshgrid(c, c, indexing="ij")
    return np.stack([u.reshape(-1), v.reshape(-1)], axis=-1)


def _points_in_mask(mask: np.ndarray, g: int) -> np.ndarray:
    """``(M, 2)`` points (u, v) in [0, 1] of mask coordinates: a g x g grid over the mask's
    bounding box kept where the mask is set (or the set pixel nearest its centroid)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.zeros((0, 2))
    h, w = mask.shape
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    uv = _cell_centres(g)
    px = x0 + uv[:, 0] * (x1 - x0)
    py = y0 + uv[:, 1] * (y1 - y0)
    inside = mask[np.minimum(py.astype(int), h - 1), np.minimum(px.astype(int), w - 1)]
    if not inside.any():  # thin or hollow mask: one point on it
        k = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)
        return np.array([[(xs[k] + 0.5) / w, (ys[k] + 0.5) / h]])
    return np.stack([px[inside] / w, py[inside] / h], axis=-1)


def _label_index(label, position: int) -> int:
    index = getattr(label, "index", None)
    return int(index) if index is not None else position


def prompts_from_label(
    label, size: tuple[int, int], grid_size: int, mask_targets: dict | None = None
) -> tuple[np.ndarray, Sources]:
    """Query points ``(N, 2)`` (x, y) in pixels of a (W, H) frame and their `Sources`, from one
    frame's label: a grid_size x grid_size grid inside each detection box (or its instance
    mask), inside each class of a segmentation mask, or the points of keypoints."""
    W, H = size
    pts, labels, ids, indices = [], [], [], []

    def add(uv: np.ndarray, lab, lid, index):
        if len(uv):
            pts.append(uv * np.array([W, H]))
            labels.extend([lab] * len(uv))
            ids.extend([lid] * len(uv))
            indices.extend([index] * len(uv))

    if isinstance(label, fo.Detection):
        label = fo.Detections(detections=[label])
    if isinstance(label, fo.Keypoint):
        label = fo.Keypoints(keypoints=[label])
    if isinstance(label, fo.Detections | fo.Segmentation) and grid_size < 1:
        raise PromptError("grid size must be >= 1 to place points inside boxes or masks")
    if isinstance(label, fo.Detections):
        for pos, det in enumerate(label.detections):
            x, y, w, h = det.bounding_box
            mask = det.get_mask() if (det.mask is not None or det.mask_path) else None
            uv = _cell_centres(grid_size) if mask is None else _points_in_mask(mask > 0, grid_size)
            add(np.asarray([x, y]) + uv * np.asarray([w, h]), det.label, det.id,
                _label_index(det, pos))
    elif isinstance(label, fo.Segmentation):
        mask = label.get_mask()
        if mask is None:
            raise PromptError(f"segmentation {label.id} has no mask")
        if mask.ndim == 3:  # RGB masks: one class per colour
            mask = (mask[..., 0].astype(np.int64) << 16) | (mask[..., 1].astype(np.int64) << 8) \
                | mask[..., 2].astype(np.int64)
        for value in np.unique(mask):
            if value == 0:
                continue
            name = (mask_targets or {}).get(int(value), str(int(value)))
            add(_points_in_mask(mask == value, grid_size), name, label.id, int(value))
    elif isinstance(label, fo.Keypoints):
        for pos, kp in enumerate(label.keypoints):
            p = np.asarray(kp.points, dtype=np.float64).reshape(-1, 2)
            add(p[np.isfinite(p).all(axis=1)], kp.label, kp.id, _label_index(kp, pos))
    else:
        raise PromptError(f"cannot prompt from {type(label).__name__} labels")
    if not pts:
        raise PromptError("the prompt labels give no points")
    xy = np.concatenate(pts).astype(np.float64)
    # Boxes may touch the border; queries must lie inside the frame.
    xy = np.clip(xy, 0, [W - 1, H - 1])
    return xy, Sources(label=labels, id=ids, index=np.asarray(indices))



def _prompt_row(frame_numbers: np.ndarray, prompt_frame: int | None) -> int:
    if prompt_frame is None:
        return 0
    rows = np.flatnonzero(frame_numbers + 1 == prompt_frame)
    if len(rows) == 0:
        raise PromptError(
            f"prompt frame {prompt_frame} is not among the tracked frames "
            f"({_describe(frame_numbers + 1)})"
        )
    return int(rows[0])


def _describe(fns: np.ndarray) -> str:
    shown = ", ".join(str(f) for f in fns[:5].tolist())
    return shown + (", ..." if len(fns) > 5 else "")


def _prompt_label(dataset, sample_id: str, name: str, row: int, frame_numbers: np.ndarray):
    fn = int(frame_numbers[row]) + 1
    view = dataset.select(sample_id).match_frames(F("frame_number") == fn, omit_empty=False)
    values = view.values(f"frames.{name}")[0]
    label = values[0] if values else None
    if label is None:
        raise PromptError(f"no '{name}' labels on frame {fn} to prompt from")
    return label


# -- apply_model ---------------------------------------------------------------------------------

