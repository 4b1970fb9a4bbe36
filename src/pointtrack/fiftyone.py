"""FiftyOne integration: video datasets in, per-frame ``fo.Keypoints`` out.

In the style of ``fiftyone/utils/<integration>.py``: plain conversion functions, a bulk
writer, a dataset runner and a thin `fiftyone.core.models.Model` wrapper.

What is stored, for ``label_field="tracks"``:

- ``frames.tracks``: one ``fo.Keypoints`` per tracked frame holding one ``fo.Keypoint`` per
  track (``points=[(x, y)]`` normalised by the frame size, ``index`` = track id so the App
  links a track across frames, ``confidence=[c]`` where the tracker gives one). Visible points
  only, unless ``include_occluded`` (then every point, with ``occluded`` True/False). Tracks
  started from existing labels carry ``label`` (the source label), ``source_id`` and
  ``source_index``. FiftyOne frame numbers are 1-based: source frame ``i`` (0-based) is
  frame ``i + 1``, so sampled frames land on their source frames.
- ``tracks_result`` (sample field): the complete `Tracks` as zlib-compressed ``.npy`` arrays
  (FiftyOne's own ``ArrayField`` encoding) plus scalars. Binary arrays read back bit-exact in
  their dtype and shape, decode in milliseconds and live inside the sample document (deleted
  and cloned with it); `tracks_from_sample` turns it back into the identical `Tracks`. A
  result over MongoDB's 16 MB document limit (thousands of frames x thousands of points) keeps
  its arrays in an ``.npz`` under ``fo.config.default_dataset_dir/<dataset>/pointtrack/``
  instead, with the path in the result.
- ``tracks_error`` (sample field): why tracking failed on that sample, else None.

Writes are bulk: one ``set_values`` for all frames of a sample, built from plain Mongo
documents (not ``fo.Keypoint`` objects, whose construction alone costs seconds for 300k
points), and one for the sample. The result field is written last and is the "done" marker:
a sample whose frames were written but whose result is missing (an interrupted run) is
cleared and redone by the next run.
"""

from __future__ import annotations

import gc
import glob as globlib
import io
import json
import logging
import mimetypes
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fiftyone as fo
import fiftyone.core.media as fom
import fiftyone.core.models as fomo
import numpy as np
from bson import ObjectId
from fiftyone import ViewField as F
from fiftyone.core.clips import ClipsView

from .trackers.base import PromptError, Tracker
from .tracks import Tracks, atomic_path
from .video import VideoError, probe, read_clip

logger = logging.getLogger(__name__)

#: Keypoint attributes this module writes (declared in the frame schema for the App sidebar).
KEYPOINT_ATTRIBUTES = {
    "occluded": fo.BooleanField,
    "source_id": fo.StringField,
    "source_index": fo.IntField,
}

# Arrays of the sample result field, with the dtype `Tracks` holds them in.
_ARRAYS = ("xy", "visible", "queries", "frame_numbers", "visibility", "confidence")
_MAX_DOC_BYTES = 15 * 1024 * 1024  # MongoDB refuses documents over 16 MB


class DatasetError(ValueError):
    """A dataset, field or label that does not exist or has the wrong type."""


def result_field(label_field: str) -> str:
    """Name of the sample field holding the complete result of ``label_field``."""
    return f"{label_field}_result"


def error_field(label_field: str) -> str:
    """Name of the sample field holding the error of a failed sample."""
    return f"{label_field}_error"


# -- track sources (tracks started from existing labels) ---------------------------------------


@dataclass
class Sources:
    """Which existing label each track started from: per track, ``(N,)`` each.

    ``label`` is the source label's class (or None), ``id`` its FiftyOne label id, ``index``
    its ``index`` attribute if set, else its position in its label list (or the mask value for
    a `Segmentation`); -1 where a track has no source.
    """

    label: list[str | None]
    id: list[str | None]
    index: np.ndarray

    def __post_init__(self) -> None:
        self.index = np.asarray(self.index, dtype=np.int64).reshape(-1)
        if not len(self.label) == len(self.id) == len(self.index):
            raise ValueError("sources: label, id and index must have one entry per track")

    def __len__(self) -> int:
        return len(self.index)


# -- tracks -> labels ----------------------------------------------------------------------------


def tracks_to_frames(
    tracks: Tracks,
    *,
    include_occluded: bool = False,
    sources: Sources | None = None,
    raw: bool = False,
) -> dict[int, Any]:
    """Per-frame keypoints of ``tracks``: ``{frame_number: fo.Keypoints}``.

    Args:
        tracks: the tracks (source pixels).
        include_occluded: keep occluded points too, with attribute ``occluded=True``.
        sources: the label each track started from (stored as keypoint ``label``,
            ``source_id``, ``source_index``).
        raw: return the Mongo documents (dicts) instead of ``fo.Keypoints``; this is what the
            bulk writer stores, and building them is ~10x faster than building label objects.

    Returns:
        a dict mapping 1-based frame numbers (source frame index + 1) to ``fo.Keypoints`` (or
        their dicts). Every tracked frame is present, possibly with no keypoints.
    """
    if sources is not None and len(sources) != tracks.num_tracks:
        raise ValueError(f"{len(sources)} sources for {tracks.num_tracks} tracks")
    W, H = tracks.frame_size
    # Normalise in float64: x / W * W gives back the float32 position up to float32 rounding.
    norm = tracks.xy.astype(np.float64) / np.array([W, H], dtype=np.float64)
    keep = np.ones_like(tracks.visible) if include_occluded else tracks.visible
    conf = tracks.confidence
    labels = sources.label if sources is not None else None
    oids = _object_ids(int(keep.sum()))
    frames = {}
    start = 0
    with _gc_paused():  # hundreds of thousands of small dicts: skip pointless GC passes
        for t, fn in enumerate(tracks.frame_numbers.tolist()):
            ids = np.flatnonzero(keep[t])
            x, y = norm[t, ids, 0].tolist(), norm[t, ids, 1].tolist()
            kps = [
                {"_id": oid, "_cls": "Keypoint", "tags": [], "points": [[xi, yi]], "index": i}
                for oid, i, xi, yi in zip(
                    oids[start : start + len(ids)], ids.tolist(), x, y, strict=True
                )
            ]
            start += len(ids)
            cols: dict[str, list] = {}
            if conf is not None:
                cols["confidence"] = [[c] for c in conf[t, ids].astype(np.float64).tolist()]
            if include_occluded:
                cols["occluded"] = (~tracks.visible[t, ids]).tolist()
            if sources is not None:
                cols["label"] = [labels[i] for i in ids]
                cols["source_id"] = [sources.id[i] for i in ids]
                cols["source_index"] = sources.index[ids].tolist()
            for name, values in cols.items():
                for kp, value in zip(kps, values, strict=True):
                    if value is not None:
                        kp[name] = value
            doc = {"_cls": "Keypoints", "keypoints": kps}
            frames[fn + 1] = doc if raw else fo.Keypoints.from_dict(doc)
    return frames


class _gc_paused:
    def __enter__(self):
        self.enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        if self.enabled:
            gc.enable()


def _object_ids(n: int) -> list[ObjectId]:
    """``n`` fresh, unique ObjectIds made in bulk (``ObjectId()`` one by one costs ~1 s per
    300k): the standard layout of a 4-byte timestamp, 5 random bytes (new per call) and a
    3-byte counter, here starting at a random value; calls needing over 2**24 ids split."""
    out: list[ObjectId] = []
    while n > 0:
        k = min(n, 2**24)
        head = struct.pack(">I", int(time.time())) + os.urandom(5)
        counter = (int.from_bytes(os.urandom(3), "big") + np.arange(k, dtype=np.uint32)) % 2**24
        tail = counter.astype(">u4").view(np.uint8).reshape(k, 4)[:, 1:]
        raw = np.concatenate([np.tile(np.frombuffer(head, np.uint8), (k, 1)), tail], axis=1)
        buf = raw.tobytes()
        out.extend(ObjectId(buf[12 * j : 12 * j + 12]) for j in range(k))
        n -= k
    return out


def _serialize(array: np.ndarray) -> bytes:
    """FiftyOne's ``ArrayField`` encoding (zlib-compressed ``.npy``), at the fastest level:
    float positions hardly compress, and level 6 costs ~10x the time for a few percent."""
    with io.BytesIO() as f:
        np.save(f, np.asarray(array), allow_pickle=False)
        return zlib.compress(f.getvalue(), 1)


def tracks_to_doc(
    tracks: Tracks,
    *,
    sources: Sources | None = None,
    settings: dict | None = None,
    spill_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The Mongo document of the sample result field (arrays as FiftyOne ``ArrayField`` bytes).

    Arrays over MongoDB's 16 MB document limit go to an ``.npz`` at ``spill_path`` (written
    atomically) and the document keeps its path; without ``spill_path`` that is an error.
    """
    arrays = {name: getattr(tracks, name) for name in _ARRAYS}
    if sources is not None:
        arrays["source_index"] = sources.index
    doc: dict[str, Any] = {"_cls": "DynamicEmbeddedDocument"}
    doc.update({k: None if v is None else _serialize(v) for k, v in arrays.items()})
    size = sum(len(v) for v in doc.values() if isinstance(v, bytes))
    if size > _MAX_DOC_BYTES:
        if spill_path is None:
            raise ValueError(
                f"tracks of {tracks.num_frames} frames x {tracks.num_tracks} points take "
                f"{size / 2**20:.0f} MB, over MongoDB's 16 MB per sample"
            )
        with atomic_path(spill_path) as tmp:
            np.savez(tmp, **{k: v for k, v in arrays.items() if v is not None})
        doc.update({k: None for k in arrays}, path=str(spill_path))
    doc.update(
        tracker=tracks.tracker,
        options=json.dumps(tracks.options, sort_keys=True),
        frame_size=list(tracks.frame_size),
        fps=float(tracks.fps),
        num_frames=tracks.num_frames,
        num_tracks=tracks.num_tracks,
        settings=dict(settings or {}),
    )
    if sources is not None:
        doc["source_label"] = list(sources.label)
        doc["source_id"] = list(sources.id)
    return doc


def _spill_path(dataset: fo.Dataset, sample_id: str, label_field: str) -> Path:
    return Path(fo.config.default_dataset_dir) / dataset.name / "pointtrack" / (
        f"{sample_id}-{label_field}.npz"
    )


def _result_schema() -> dict[str, Any]:
    return {
        **{name: (fo.ArrayField, {}) for name in _ARRAYS},
        "tracker": (fo.StringField, {}),
        "options": (fo.StringField, {}),
        "frame_size": (fo.ListField, {"subfield": fo.IntField}),
        "fps": (fo.FloatField, {}),
        "num_frames": (fo.IntField, {}),
        "num_tracks": (fo.IntField, {}),
        "settings": (fo.DictField, {}),
        "source_label": (fo.ListField, {"subfield": fo.StringField}),
        "source_id": (fo.ListField, {"subfield": fo.StringField}),
        "source_index": (fo.ArrayField, {}),
        "path": (fo.StringField, {}),
    }


def prepare_fields(dataset: fo.Dataset, label_field: str) -> None:
    """Declare the frame, result and error fields of ``label_field`` (idempotent); raises
    `DatasetError` if a field of that name exists with another type."""
    frame_schema = dataset.get_frame_field_schema(flat=True) or {}
    existing = frame_schema.get(label_field)
    if existing is None:
        dataset.add_frame_field(
            label_field, fo.EmbeddedDocumentField, embedded_doc_type=fo.Keypoints
        )
    elif getattr(existing, "document_type", None) is not fo.Keypoints:
        raise DatasetError(
            f"frame field '{label_field}' of dataset '{dataset.name}' holds "
            f"{_type_name(existing)}, not Keypoints: choose another field"
        )
    for name, ftype in KEYPOINT_ATTRIBUTES.items():
        path = f"{label_field}.keypoints.{name}"
        if path not in frame_schema:
            dataset.add_frame_field(path, ftype)
    schema = dataset.get_field_schema(flat=True)
    rfield, efield = result_field(label_field), error_field(label_field)
    if rfield not in schema:
        dataset.add_sample_field(
            rfield, fo.EmbeddedDocumentField, embedded_doc_type=fo.DynamicEmbeddedDocument
        )
    elif getattr(schema[rfield], "document_type", None) is not fo.DynamicEmbeddedDocument:
        raise DatasetError(f"sample field '{rfield}' exists and is not a pointtrack result")
    for name, (ftype, kwargs) in _result_schema().items():
        if f"{rfield}.{name}" not in schema:
            dataset.add_sample_field(f"{rfield}.{name}", ftype, **kwargs)
    if efield not in schema:
        dataset.add_sample_field(efield, fo.StringField)


def _type_name(field) -> str:
    doc_type = getattr(field, "document_type", None)
    return doc_type.__name__ if doc_type is not None else type(field).__name__


def _clear(dataset: fo.Dataset, sample_id: str, label_field: str) -> None:
    """Forget the result first (so a crash below leaves the sample "not done"), then the frames."""
    view = dataset.select(sample_id)
    view.set_values(result_field(label_field), [None], expand_schema=False)
    view.set_values(error_field(label_field), [None], expand_schema=False)
    view.clear_frame_field(label_field)


def _write(
    dataset: fo.Dataset,
    sample_id: str,
    tracks: Tracks,
    label_field: str,
    *,
    include_occluded: bool = False,
    sources: Sources | None = None,
    settings: dict | None = None,
) -> None:
    doc = tracks_to_doc(
        tracks, sources=sources, settings=settings,
        spill_path=_spill_path(dataset, sample_id, label_field),
    )
    frames = tracks_to_frames(tracks, include_occluded=include_occluded, sources=sources, raw=True)
    _clear(dataset, sample_id, label_field)
    # One bulk write for all frames of the sample (frames that do not exist yet are created),
    # then the result, which marks the sample as done.
    dataset.set_values(
        f"frames.{label_field}",
        {sample_id: frames},
        key_field="id",
        expand_schema=False,
        validate=False,
    )
    dataset.set_values(
        result_field(label_field), {sample_id: doc}, key_field="id", expand_schema=False,
        validate=False,
    )


def add_tracks(
    sample: fo.Sample | str,
    tracks: Tracks,
    label_field: str = "tracks",
    *,
    dataset: fo.Dataset | None = None,
    include_occluded: bool = False,
    sources: Sources | None = None,
    settings: dict | None = None,
) -> None:
    """Store ``tracks`` on a video sample (replacing any earlier result in ``label_field``).

    Args:
        sample: a sample (or sample view) in a dataset, or a sample id with ``dataset``.
        tracks: the tracks of that sample's video.
        include_occluded, sources: see `tracks_to_frames`.
        settings: JSON-able provenance stored with the result (e.g. sampling options).

    Writes ``frames.<label_field>`` (see `tracks_to_frames`) and ``<label_field>_result`` in
    bulk, then refreshes the sample's frames if the sample object is given.
    """
    if isinstance(sample, str):
        if dataset is None:
            raise DatasetError("give the dataset along with a sample id")
        sample_id, sample = sample, None
    else:
        dataset, sample_id = sample.dataset, sample.id
        if dataset is None:
            raise DatasetError("the sample must be added to a dataset before tracks are stored")
    if dataset.media_type != fom.VIDEO:
        raise DatasetError(f"dataset '{dataset.name}' holds {dataset.media_type}, not videos")
    prepare_fields(dataset, label_field)
    _write(
        dataset, sample_id, tracks, label_field,
        include_occluded=include_occluded, sources=sources, settings=settings,
    )
    if sample is not None:
        # FiftyOne 1.22's frame-level set_values does not refresh frames already in memory.
        sample.frames.reload()


# -- labels -> tracks ----------------------------------------------------------------------------


def _result_doc(sample, label_field: str):
    name = result_field(label_field)
    try:
        doc = sample[name]
    except (KeyError, AttributeError):
        doc = None
    if doc is None:
        raise DatasetError(f"sample {sample.id} has no tracks in field '{label_field}' ({name})")
    return doc


def _arrays(doc) -> dict[str, np.ndarray | None]:
    names = (*_ARRAYS, "source_index")
    path = doc["path"] if "path" in doc else None
    if path:  # a result too large for one MongoDB document
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] if k in data.files else None for k in names}
        except OSError as e:
            raise DatasetError(f"tracks file {path} of this result cannot be read ({e})") from e
    return {k: doc[k] if k in doc else None for k in names}


def tracks_from_sample(sample, label_field: str = "tracks") -> Tracks:
    """The exact `Tracks` stored by `add_tracks` / `track_dataset` on ``sample``."""
    doc = _result_doc(sample, label_field)
    arrays = _arrays(doc)
    return Tracks(
        **{name: arrays[name] for name in _ARRAYS},
        frame_size=tuple(doc["frame_size"]),
        fps=doc["fps"],
        tracker=doc["tracker"],
        options=json.loads(doc["options"]),
    )


def sources_from_sample(sample, label_field: str = "tracks") -> Sources | None:
    """The source label of each track (see `Sources`), or None for grid/query tracks."""
    doc = _result_doc(sample, label_field)
    index = _arrays(doc)["source_index"]
    if index is None:
        return None
    return Sources(label=list(doc["source_label"]), id=list(doc["source_id"]), index=index)


# -- prompts from existing labels ---------------------------------------------------------------


_PROMPT_TYPES = (fo.Detections, fo.Detection, fo.Segmentation, fo.Keypoints, fo.Keypoint)


def _name(samples) -> str:
    return samples.name if isinstance(samples, fo.Dataset) else samples.dataset_name


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


# -- datasets ----------------------------------------------------------------------------------


def load_dataset(name: str) -> fo.Dataset:
    """The FiftyOne dataset ``name``; `DatasetError` naming the known ones if there is none."""
    if not fo.dataset_exists(name):
        known = fo.list_datasets()
        shown = ", ".join(known[:10]) + (f", ... ({len(known)} in all)" if len(known) > 10 else "")
        raise DatasetError(f"no dataset named '{name}' (datasets: {shown or 'none'})")
    return fo.load_dataset(name)


def _video_paths(dir_or_glob: str | os.PathLike) -> list[str]:
    path = str(dir_or_glob)
    if any(c in path for c in "*?["):
        paths = globlib.glob(path, recursive=True)
    elif os.path.isdir(path):
        paths = [str(p) for p in Path(path).rglob("*") if p.is_file()]
    elif os.path.isfile(path):
        paths = [path]
    else:
        raise DatasetError(f"{path}: no such directory, file or glob match")
    videos = sorted(os.path.abspath(p) for p in paths if fom.get_media_type(p) == fom.VIDEO)
    if not videos:
        raise DatasetError(f"{path}: no video files found")
    return videos


def video_metadata(path: str) -> fo.VideoMetadata:
    """``fo.VideoMetadata`` of a video, read with PyAV (FiftyOne's own needs ffprobe)."""
    info = probe(path)
    return fo.VideoMetadata(
        size_bytes=os.path.getsize(path),
        mime_type=_mime_type(path),
        frame_width=info.width,
        frame_height=info.height,
        frame_rate=info.fps,
        total_frame_count=info.num_frames,
        duration=info.duration,
        encoding_str=info.codec,
    )


def _mime_type(path: str) -> str | None:
    return mimetypes.guess_type(path)[0]


def create_dataset(
    dir_or_glob: str | os.PathLike, name: str, *, overwrite: bool = False, persistent: bool = True
) -> fo.Dataset:
    """A video dataset from a directory (searched recursively) or glob of videos, with metadata.

    Videos whose metadata cannot be read are still added (without metadata), with a warning:
    tracking records their error on the sample.
    """
    paths = _video_paths(dir_or_glob)
    if fo.dataset_exists(name) and not overwrite:
        raise DatasetError(f"dataset '{name}' already exists (use overwrite to replace it)")
    samples = []
    for path in paths:
        try:
            metadata = video_metadata(path)
        except VideoError as e:
            logger.warning("%s", e)
            metadata = None
        samples.append(fo.Sample(filepath=path, metadata=metadata))
    dataset = fo.Dataset(name, overwrite=overwrite, persistent=persistent)
    dataset.add_samples(samples, progress=False)
    return dataset


def color_scheme(label_field: str = "tracks", dataset: fo.Dataset | None = None) -> fo.ColorScheme:
    """An App colour scheme giving each track its own colour (``color_by="instance"`` colours
    labels by their ``index``, which is the track id); saved on ``dataset`` if given."""
    fields = [{"path": f"frames.{label_field}", "colorByAttribute": "index"}]
    scheme = fo.ColorScheme(color_by="instance", fields=fields, show_skeletons=False)
    if dataset is not None:
        dataset.app_config.color_scheme = scheme
        dataset.save()
    return scheme


# -- running over datasets ----------------------------------------------------------------------


@dataclass
class TrackSummary:
    """What `track_dataset` did: sample ids done, skipped (already tracked) and failed."""

    label_field: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        text = (
            f"{self.label_field}: {len(self.done)} tracked, {len(self.skipped)} skipped "
            f"(already tracked), {len(self.failed)} failed"
        )
        for sample_id, error in self.failed.items():
            text += f"\n  {sample_id}: {error}"
        return text


def _root_dataset(samples) -> fo.Dataset:
    if isinstance(samples, fo.Dataset):
        return samples
    return fo.load_dataset(samples.dataset_name)


def track_dataset(
    samples,
    tracker: Tracker,
    label_field: str = "tracks",
    *,
    grid_size: int = 10,
    queries: Any = None,
    prompt_field: str | None = None,
    prompt_frame: int | None = None,
    every: int = 1,
    fps: float | None = None,
    max_frames: int | None = None,
    backward_tracking: bool = False,
    include_occluded: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrackSummary:
    """Track every video of a dataset or view and store the tracks (see module docstring).

    Each video is decoded straight to ``tracker.input_size``, sampled by ``every`` / ``fps`` /
    ``max_frames``. Samples that already hold ``<label_field>_result`` are skipped unless
    ``overwrite``; a sample that fails gets its error in ``<label_field>_error`` and in the
    summary, and the run goes on. Each sample is written completely (frames, then result)
    before the next starts, so an interrupted run resumes where it stopped.

    Args:
        grid_size: grid points per side over the frame, or per box/mask with ``prompt_field``.
        queries: ``(N, 3)`` rows of (t, x, y) in source pixels, t a row of the tracked clip;
            the same for every sample.
        prompt_field: a frame field of Detections, Segmentation or Keypoints whose labels on
            ``prompt_frame`` become the queries.
        prompt_frame: 1-based FiftyOne frame number of the prompt labels (and of the grid);
            must be a sampled frame. Default: the first tracked frame.
    """
    if samples.media_type != fom.VIDEO:
        raise DatasetError(f"'{_name(samples)}' holds {samples.media_type}, not videos")
    if isinstance(samples, ClipsView):
        raise DatasetError("clip views are not supported: track the videos' dataset or a view")
    dataset = _root_dataset(samples)
    prompt_name = check_prompt_field(dataset, prompt_field) if prompt_field else None
    if prompt_name is not None and queries is not None:
        raise PromptError("give either queries or a prompt field, not both")
    prepare_fields(dataset, label_field)

    rfield = result_field(label_field)
    ids, paths, done = samples.values(["id", "filepath", f"{rfield}.num_frames"])
    summary = TrackSummary(label_field)
    settings = {
        "label_field": label_field,
        "grid_size": grid_size,
        "prompt_field": prompt_name,
        "prompt_frame": prompt_frame,
        "every": every,
        "fps": fps,
        "max_frames": max_frames,
        "backward_tracking": backward_tracking,
        "include_occluded": include_occluded,
    }
    mask_targets = dataset.mask_targets.get(prompt_name) or dataset.default_mask_targets

    from tqdm.auto import tqdm

    bar = tqdm(total=len(ids), desc=f"track {label_field}", unit="video", disable=not progress)
    for sample_id, path, is_done in zip(ids, paths, done, strict=True):
        if is_done is not None and not overwrite:
            summary.skipped.append(sample_id)
            bar.update()
            continue
        try:
            clip = read_clip(path, size=tracker.input_size, every=every, fps=fps,
                             max_frames=max_frames)
            row = _prompt_row(clip.frame_numbers, prompt_frame)
            sources = None
            sample_queries = queries
            if prompt_name is not None:
                label = _prompt_label(dataset, sample_id, prompt_name, row, clip.frame_numbers)
                xy, sources = prompts_from_label(label, clip.source_size, grid_size, mask_targets)
                sample_queries = np.concatenate([np.full((len(xy), 1), row), xy], axis=1)
            tracks = tracker.track(
                clip,
                grid_size=0 if sample_queries is not None else grid_size,
                queries=sample_queries,
                grid_query_frame=row,
                backward_tracking=backward_tracking,
            )
            _write(dataset, sample_id, tracks, label_field, include_occluded=include_occluded,
                   sources=sources, settings=settings)
            summary.done.append(sample_id)
        except Exception as e:  # noqa: BLE001 -- any failure is recorded and the run goes on
            message = str(e) or type(e).__name__
            summary.failed[sample_id] = message
            logger.warning("sample %s (%s): %s", sample_id, path, message)
            _clear(dataset, sample_id, label_field)
            dataset.set_values(error_field(label_field), {sample_id: message}, key_field="id")
            bar.set_postfix(failed=len(summary.failed))
        bar.update()
    bar.close()
    dataset.reload()  # refresh samples and frames that callers hold in memory
    return summary


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


class TrackerModel(fomo.Model, fomo.SamplesMixin):
    """A FiftyOne video `Model` around a tracker engine, for ``dataset.apply_model``::

        model = TrackerModel(load_tracker("lk"), grid_size=10)
        dataset.apply_model(model, label_field="tracks")

    ``apply_model`` stores the per-frame keypoints with FiftyOne's own (per sample, label
    object) writer; `track_dataset` is the faster route that also stores the exact result,
    resumes and records errors. FiftyOne opens an ffmpeg reader for each video (ffmpeg must be
    installed); the model ignores its full-resolution frames and decodes the file itself at the
    tracker's input size with the sampling options given here.
    """

    def __init__(
        self,
        tracker: Tracker,
        *,
        grid_size: int = 10,
        queries: Any = None,
        every: int = 1,
        fps: float | None = None,
        max_frames: int | None = None,
        include_occluded: bool = False,
    ) -> None:
        fomo.SamplesMixin.__init__(self)
        self.tracker = tracker
        self.grid_size = grid_size
        self.queries = queries
        self.sampling = dict(every=every, fps=fps, max_frames=max_frames)
        self.include_occluded = include_occluded

    @property
    def media_type(self) -> str:
        return "video"

    @property
    def ragged_batches(self) -> bool:
        return False

    @property
    def transforms(self):
        return None

    @property
    def preprocess(self) -> bool:
        return False

    @preprocess.setter
    def preprocess(self, value: bool) -> None:
        pass

    def predict_tracks(self, video) -> Tracks:
        """`Tracks` of a video path, ``etav.VideoReader`` or `Clip`/frames."""
        path = getattr(video, "inpath", video)
        if isinstance(path, str | os.PathLike):
            video = read_clip(path, size=self.tracker.input_size, **self.sampling)
        return self.tracker.track(
            video, grid_size=0 if self.queries is not None else self.grid_size,
            queries=self.queries,
        )

    def predict(self, arg, sample=None) -> dict[int, fo.Keypoints]:
        video = sample.filepath if sample is not None else arg
        tracks = self.predict_tracks(video)
        return tracks_to_frames(tracks, include_occluded=self.include_occluded)

    def predict_all(self, args, samples=None) -> list[dict[int, fo.Keypoints]]:
        samples = samples or [None] * len(args)
        return [self.predict(a, s) for a, s in zip(args, samples, strict=True)]
