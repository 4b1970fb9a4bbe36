"""Tracks <-> FiftyOne labels: per-frame ``fo.Keypoints`` and the exact result on the sample.

In the style of ``fiftyone/utils/<integration>.py``: plain conversion functions and a bulk
writer.

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
import io
import json
import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fiftyone as fo
import fiftyone.core.media as fom
import fiftyone.core.odm as foo
import numpy as np
from bson import ObjectId

from ..tracks import Tracks, atomic_path

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
    rows: np.ndarray | None = None,
) -> dict[int, Any]:
    """Per-frame keypoints of ``tracks``: ``{frame_number: fo.Keypoints}``.

    Args:
        tracks: the tracks (source pixels).
        include_occluded: keep occluded points too, with attribute ``occluded=True``.
        sources: the label each track started from (stored as keypoint ``label``,
            ``source_id``, ``source_index``).
        raw: return the Mongo documents (dicts) instead of ``fo.Keypoints``; building them is
            ~10x faster than building label objects. (The bulk writer encodes tracks without
            sources to BSON directly, ~10x faster again, for the same documents.)
        rows: only these rows of ``tracks`` (indices into ``frame_numbers``).

    Returns:
        a dict mapping 1-based frame numbers (source frame index + 1) to ``fo.Keypoints`` (or
        their dicts). Every tracked frame is present, possibly with no keypoints.
    """
    if sources is not None and len(sources) != tracks.num_tracks:
        raise ValueError(f"{len(sources)} sources for {tracks.num_tracks} tracks")
    norm, keep = _stored_points(tracks, include_occluded)
    conf = tracks.confidence
    labels = sources.label if sources is not None else None
    rows = np.arange(tracks.num_frames) if rows is None else np.asarray(rows)
    oids = _object_ids(int(keep[rows].sum()))
    frames = {}
    start = 0
    with _gc_paused():  # hundreds of thousands of small dicts: skip pointless GC passes
        for t, fn in zip(rows.tolist(), tracks.frame_numbers[rows].tolist(), strict=True):
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


def _stored_points(tracks: Tracks, include_occluded: bool) -> tuple[np.ndarray, np.ndarray]:
    """The positions as stored, ``(T, N, 2)`` normalised by the frame size, and which points
    are stored, ``(T, N)``: the visible ones, or all with ``include_occluded``."""
    W, H = tracks.frame_size
    # Normalise in float64: x / W * W gives back the float32 position up to float32 rounding.
    norm = tracks.xy.astype(np.float64) / np.array([W, H], dtype=np.float64)
    keep = np.ones_like(tracks.visible) if include_occluded else tracks.visible
    return norm, keep


class _gc_paused:
    def __enter__(self):
        self.enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        if self.enabled:
            gc.enable()


def _object_id_bytes(n: int) -> np.ndarray:
    """``(n, 12)`` bytes of ``n`` fresh, unique ObjectIds, made in bulk (``ObjectId()`` one by
    one costs ~1 s per 300k): the standard layout of a 4-byte timestamp, 5 random bytes (new
    per call) and a 3-byte counter, here starting at a random value; calls needing over 2**24
    ids split."""
    parts = [np.empty((0, 12), np.uint8)]
    while n > 0:
        k = min(n, 2**24)
        head = struct.pack(">I", int(time.time())) + os.urandom(5)
        counter = (int.from_bytes(os.urandom(3), "big") + np.arange(k, dtype=np.uint32)) % 2**24
        tail = counter.astype(">u4").view(np.uint8).reshape(k, 4)[:, 1:]
        parts.append(np.concatenate([np.tile(np.frombuffer(head, np.uint8), (k, 1)), tail],
                                    axis=1))
        n -= k
    return np.concatenate(parts)


def _object_ids(n: int) -> list[ObjectId]:
    buf = _object_id_bytes(n).tobytes()
    return [ObjectId(buf[12 * j : 12 * j + 12]) for j in range(n)]


class _KeypointsEncoder:
    """Per-frame ``Keypoints`` documents encoded straight to BSON with NumPy, for tracks without
    sources: every keypoint document then has one layout, so a frame's documents are rows of
    a byte template with the ids, positions, indices and confidences written in. BSON's
    array keys ("0", "1", ...) are filled in by digit count. ~20x faster than building the
    documents as dicts (and ObjectIds) for pymongo to encode, for byte-identical BSON: the
    template is pymongo's own encoding of a document with marker values."""

    _MARKS = {"_id": b"\xa1" * 12, "x": struct.pack("<d", 1.234567890123e-7),
              "y": struct.pack("<d", 7.654321098765e-7), "index": struct.pack("<i", 0x7A5B3C1D),
              "confidence": struct.pack("<d", 3.1415926535e-9)}

    def __init__(self, confidence: bool, occluded: bool) -> None:
        import bson

        doc = {"_id": ObjectId(self._MARKS["_id"]), "_cls": "Keypoint", "tags": [],
               "points": [[struct.unpack("<d", self._MARKS["x"])[0],
                           struct.unpack("<d", self._MARKS["y"])[0]]],
               "index": struct.unpack("<i", self._MARKS["index"])[0]}
        if confidence:
            doc["confidence"] = [struct.unpack("<d", self._MARKS["confidence"])[0]]
        if occluded:
            doc["occluded"] = True
        raw = bson.encode(doc)
        self.template = np.frombuffer(raw, np.uint8)
        self.at = {}
        for name, mark in self._MARKS.items():
            if name in doc or name in ("x", "y"):
                self.at[name] = raw.index(mark)
                assert raw.count(mark) == 1
        if occluded:
            # The last element: type 0x08, key "occluded", one byte of value, then the end.
            self.at["occluded"] = len(raw) - 2
            assert raw[self.at["occluded"] - len(b"occluded") - 2] == 0x08
        head = bson.encode({"_cls": "Keypoints", "keypoints": []})
        self.head = head[: -len(b"\x05\x00\x00\x00\x00\x00")]  # up to the empty array

    def frame(self, ids: np.ndarray, xy: np.ndarray, oids: np.ndarray,
              confidence: np.ndarray | None, occluded: np.ndarray | None) -> Any:
        """One frame's ``Keypoints`` as a ``RawBSONDocument``: ``ids`` ``(n,)`` track indices,
        ``xy`` ``(n, 2)`` float64 normalised positions, ``oids`` ``(n, 12)`` id bytes."""
        from bson.raw_bson import RawBSONDocument

        n, size = len(ids), len(self.template)
        rows = np.empty((n, size), np.uint8)
        rows[:] = self.template
        at = self.at
        rows[:, at["_id"] : at["_id"] + 12] = oids
        rows[:, at["x"] : at["x"] + 8] = xy[:, 0].astype("<f8").view(np.uint8).reshape(n, 8)
        rows[:, at["y"] : at["y"] + 8] = xy[:, 1].astype("<f8").view(np.uint8).reshape(n, 8)
        rows[:, at["index"] : at["index"] + 4] = (
            ids.astype("<i4").view(np.uint8).reshape(n, 4))
        if confidence is not None:
            rows[:, at["confidence"] : at["confidence"] + 8] = (
                confidence.astype("<f8").view(np.uint8).reshape(n, 8))
        if occluded is not None:
            rows[:, at["occluded"]] = occluded
        # The array's elements: type 0x03 (document), key = position in decimal, NUL, document.
        parts = []
        for digits in range(1, len(str(max(n - 1, 0))) + 1):
            lo, hi = (0 if digits == 1 else 10 ** (digits - 1)), min(n, 10**digits)
            if lo >= hi:
                break
            pos = np.arange(lo, hi)
            element = np.empty((hi - lo, digits + 2 + size), np.uint8)
            element[:, 0] = 0x03
            for j in range(digits):
                element[:, 1 + j] = 48 + (pos // 10 ** (digits - 1 - j)) % 10
            element[:, digits + 1] = 0
            element[:, digits + 2 :] = rows[lo:hi]
            parts.append(element.tobytes())
        body = b"".join(parts)
        array = struct.pack("<i", 4 + len(body) + 1) + body + b"\x00"
        total = len(self.head) + len(array) + 1
        return RawBSONDocument(struct.pack("<i", total) + self.head[4:] + array + b"\x00")


def _frames_bson(tracks: Tracks, include_occluded: bool,
                 rows: np.ndarray | None = None) -> dict[int, Any]:
    """`tracks_to_frames` (no sources) as BSON documents, for the bulk writer."""
    norm, keep = _stored_points(tracks, include_occluded)
    conf = tracks.confidence
    encoder = _KeypointsEncoder(conf is not None, include_occluded)
    rows = np.arange(tracks.num_frames) if rows is None else np.asarray(rows)
    oids = _object_id_bytes(int(keep[rows].sum()))
    frames, start = {}, 0
    for t, fn in zip(rows.tolist(), tracks.frame_numbers[rows].tolist(), strict=True):
        ids = np.flatnonzero(keep[t])
        n = len(ids)
        frames[fn + 1] = encoder.frame(
            ids, norm[t, ids], oids[start : start + n],
            None if conf is None else conf[t, ids].astype(np.float64),
            (~tracks.visible[t, ids]) if include_occluded else None,
        )
        start += n
    return frames


def _serialize(array: np.ndarray) -> bytes:
    """FiftyOne's ``ArrayField`` encoding (a zlib stream of the ``.npy``). Float arrays are
    stored (level 0): positions and probabilities shrink by only 10-15% at level 1, which
    took 0.12 s of a 0.8 s store of 140 frames x 2,500 points on this project's VM (and
    reading them back 5x longer). Flags and integers compress well, and cheaply."""
    array = np.asarray(array)
    with io.BytesIO() as f:
        np.save(f, array, allow_pickle=False)
        return zlib.compress(f.getvalue(), 0 if array.dtype.kind in "fc" else 1)


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
        # No subfield: keypoints without a label give None, which StringField refuses on load.
        "source_label": (fo.ListField, {}),
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
        # One declaration with every subfield: each schema change reloads the dataset.
        fields = [foo.create_field(name, ftype, **kwargs)
                  for name, (ftype, kwargs) in _result_schema().items()]
        dataset.add_sample_field(rfield, fo.EmbeddedDocumentField,
                                 embedded_doc_type=fo.DynamicEmbeddedDocument, fields=fields)
    elif getattr(schema[rfield], "document_type", None) is not fo.DynamicEmbeddedDocument:
        raise DatasetError(f"sample field '{rfield}' exists and is not a pointtrack result")
    else:
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
    """Store ``tracks`` on a sample: `_clear`, `_write_frames` for every row,
    `_write_result`."""
    doc = _result(dataset, sample_id, tracks, label_field, sources, settings)
    _clear(dataset, sample_id, label_field)
    _write_frames(dataset, sample_id, tracks, label_field, include_occluded=include_occluded,
                  sources=sources)
    _write_result(dataset, sample_id, label_field, doc)


def _result(dataset: fo.Dataset, sample_id: str, tracks: Tracks, label_field: str,
            sources: Sources | None, settings: dict | None) -> dict[str, Any]:
    return tracks_to_doc(tracks, sources=sources, settings=settings,
                         spill_path=_spill_path(dataset, sample_id, label_field))


def _write_frames(
    dataset: fo.Dataset,
    sample_id: str,
    tracks: Tracks,
    label_field: str,
    *,
    include_occluded: bool = False,
    sources: Sources | None = None,
    rows: np.ndarray | None = None,
) -> None:
    """The per-frame labels of ``rows`` (default all) of ``tracks``, in one bulk write (frames
    that do not exist yet are created). Parts of one sample's rows may be written at once,
    from several processes, between `_clear` and `_write_result`."""
    if sources is None:
        frames = _frames_bson(tracks, include_occluded, rows)
    else:  # labels of varying length: documents for pymongo to encode
        frames = tracks_to_frames(tracks, include_occluded=include_occluded, sources=sources,
                                  raw=True, rows=rows)
    dataset.set_values(
        f"frames.{label_field}",
        {sample_id: frames},
        key_field="id",
        expand_schema=False,
        validate=False,
    )


def _write_result(dataset: fo.Dataset, sample_id: str, label_field: str,
                  doc: dict[str, Any]) -> None:
    """The last step of a store: the result (`tracks_to_doc`), which marks the sample done."""
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


def _name(samples) -> str:
    return samples.name if isinstance(samples, fo.Dataset) else samples.dataset_name
