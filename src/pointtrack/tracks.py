"""`Tracks`: what every tracker returns.

Positions are in source-video pixels, rows are the frames that were tracked (which may be a
sample of the source video: ``frame_numbers`` maps each row back to its 0-based source index).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class TracksError(ValueError):
    """Tracks with inconsistent shapes or values, or a file that is not a Tracks file."""


@dataclass
class Tracks:
    """Point tracks through a video.

    Attributes:
        xy: ``(T, N, 2)`` float32 positions (x, y) in source-video pixels.
        visible: ``(T, N)`` bool, True where the point is visible.
        queries: ``(N, 3)`` float32 query points as ``(t, x, y)``: ``t`` is the row (0-based,
            into ``frame_numbers``) on which the point was given, ``x, y`` in source pixels.
        frame_numbers: ``(T,)`` int64 0-based source frame index of each row.
        frame_size: ``(W, H)`` of the source video.
        fps: frame rate of the tracked rows (source fps divided by the sampling step).
        tracker: name of the tracker that made them.
        visibility: optional ``(T, N)`` float32 visibility probability.
        confidence: optional ``(T, N)`` float32 confidence probability.
        options: the tracker's options (JSON-serialisable), kept for provenance.
    """

    xy: np.ndarray
    visible: np.ndarray
    queries: np.ndarray
    frame_numbers: np.ndarray
    frame_size: tuple[int, int]
    fps: float = 0.0
    tracker: str = ""
    visibility: np.ndarray | None = None
    confidence: np.ndarray | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xy = np.asarray(self.xy, dtype=np.float32)
        self.visible = np.asarray(self.visible, dtype=bool)
        self.queries = np.asarray(self.queries, dtype=np.float32).reshape(-1, 3)
        self.frame_numbers = np.asarray(self.frame_numbers, dtype=np.int64).reshape(-1)
        self.frame_size = (int(self.frame_size[0]), int(self.frame_size[1]))
        self.fps = float(self.fps)
        if self.xy.ndim != 3 or self.xy.shape[2] != 2:
            raise TracksError(f"xy must be (T, N, 2), got {self.xy.shape}")
        T, N = self.xy.shape[:2]
        if self.visible.shape != (T, N):
            raise TracksError(f"visible must be {(T, N)}, got {self.visible.shape}")
        if self.queries.shape != (N, 3):
            raise TracksError(f"queries must be {(N, 3)}, got {self.queries.shape}")
        if self.frame_numbers.shape != (T,):
            raise TracksError(f"frame_numbers must be ({T},), got {self.frame_numbers.shape}")
        for name in ("visibility", "confidence"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=np.float32)
                if value.shape != (T, N):
                    raise TracksError(f"{name} must be {(T, N)}, got {value.shape}")
                setattr(self, name, value)
        if self.frame_size[0] <= 0 or self.frame_size[1] <= 0:
            raise TracksError(f"frame_size must be positive (W, H), got {self.frame_size}")

    @property
    def num_frames(self) -> int:
        return self.xy.shape[0]

    @property
    def num_tracks(self) -> int:
        return self.xy.shape[1]

    def __len__(self) -> int:
        return self.num_tracks

    def __repr__(self) -> str:
        visible = self.visible.mean() if self.visible.size else 0.0
        return (
            f"Tracks(tracker={self.tracker!r}, frames={self.num_frames}, tracks={self.num_tracks}, "
            f"frame_size={self.frame_size}, visible={visible:.2f})"
        )

    def select(self, tracks: np.ndarray | slice | list[int]) -> Tracks:
        """The subset of tracks given by an index, slice or boolean mask over N."""
        return Tracks(
            xy=self.xy[:, tracks],
            visible=self.visible[:, tracks],
            queries=self.queries[tracks],
            frame_numbers=self.frame_numbers,
            frame_size=self.frame_size,
            fps=self.fps,
            tracker=self.tracker,
            visibility=None if self.visibility is None else self.visibility[:, tracks],
            confidence=None if self.confidence is None else self.confidence[:, tracks],
            options=dict(self.options),
        )

    def equals(self, other: Tracks) -> bool:
        """Exact equality of every array and attribute."""

        def same(a, b):
            if a is None or b is None:
                return a is None and b is None
            return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)

        return (
            same(self.xy, other.xy)
            and same(self.visible, other.visible)
            and same(self.queries, other.queries)
            and same(self.frame_numbers, other.frame_numbers)
            and same(self.visibility, other.visibility)
            and same(self.confidence, other.confidence)
            and self.frame_size == other.frame_size
            and self.fps == other.fps
            and self.tracker == other.tracker
            and self.options == other.options
        )

    # -- files -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of numpy arrays and JSON-able attributes (what `save` writes)."""
        d: dict[str, Any] = {
            "xy": self.xy,
            "visible": self.visible,
            "queries": self.queries,
            "frame_numbers": self.frame_numbers,
            "frame_size": np.asarray(self.frame_size, dtype=np.int64),
            "fps": np.float64(self.fps),
            "tracker": self.tracker,
            "options": json.dumps(self.options, sort_keys=True),
        }
        if self.visibility is not None:
            d["visibility"] = self.visibility
        if self.confidence is not None:
            d["confidence"] = self.confidence
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tracks:
        def opt(key):
            return np.asarray(d[key]) if key in d and d[key] is not None else None

        options = d.get("options", "{}")
        if isinstance(options, np.ndarray):
            options = options.item()
        if isinstance(options, str):
            options = json.loads(options)
        tracker = d.get("tracker", "")
        if isinstance(tracker, np.ndarray):
            tracker = tracker.item()
        return cls(
            xy=np.asarray(d["xy"]),
            visible=np.asarray(d["visible"]),
            queries=np.asarray(d["queries"]),
            frame_numbers=np.asarray(d["frame_numbers"]),
            frame_size=tuple(np.asarray(d["frame_size"]).tolist()),
            fps=float(np.asarray(d.get("fps", 0.0))),
            tracker=str(tracker),
            visibility=opt("visibility"),
            confidence=opt("confidence"),
            options=options,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write a compressed ``.npz`` atomically (temp file, then rename)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tracks:
        path = Path(path)
        if not path.is_file():
            raise TracksError(f"{path}: no such file")
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls.from_dict({k: data[k] for k in data.files})
        except (OSError, ValueError, KeyError) as e:
            raise TracksError(f"{path}: not a pointtrack tracks file ({e})") from e

    def to_csv(self, path: str | os.PathLike) -> Path:
        """One row per point per frame: frame, track, x, y, visible[, visibility][, confidence]."""
        path = Path(path)
        T, N = self.visible.shape
        header = ["frame_number", "track_id", "x", "y", "visible"]
        cols = [
            np.repeat(self.frame_numbers, N),
            np.tile(np.arange(N), T),
            self.xy[..., 0].reshape(-1),
            self.xy[..., 1].reshape(-1),
            self.visible.reshape(-1).astype(int),
        ]
        for name in ("visibility", "confidence"):
            value = getattr(self, name)
            if value is not None:
                header.append(name)
                cols.append(value.reshape(-1))
        with atomic_path(path) as tmp:
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(header)
                for row in zip(*cols, strict=True):
                    w.writerow(
                        [int(row[0]), int(row[1]), f"{row[2]:.3f}", f"{row[3]:.3f}", int(row[4])]
                        + [f"{v:.4f}" for v in row[5:]]
                    )
        return path

    def to_tapvid(self) -> dict[str, np.ndarray]:
        """TAP-Vid style dict: ``points (N, T, 2)`` normalised to [0, 1], ``occluded (N, T)``,
        ``query_points (N, 3)`` as (t, y, x) in pixels."""
        W, H = self.frame_size
        points = self.xy.transpose(1, 0, 2) / np.array([W, H], dtype=np.float32)
        return {
            "points": points.astype(np.float32),
            "occluded": ~self.visible.T,
            "query_points": self.queries[:, [0, 2, 1]].astype(np.float32),
        }


class atomic_path:
    """Context manager yielding a temp path beside ``path``; renamed onto it only on success.

    The temp name keeps the suffix so that writers which pick a format from it still work.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.stem}.part-", suffix=self.path.suffix, dir=self.path.parent
        )
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            # mkstemp makes the file private (0600); the result gets the mode a plain open()
            # would give it (the file it replaces keeps its own), so outputs stay readable by
            # whoever could read the folder: the FiftyOne App's server, a shared dataset.
            try:
                mode = self.path.stat().st_mode & 0o7777
            except FileNotFoundError:
                mode = 0o666 & ~_umask()
            os.chmod(self.tmp, mode)
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


_umask_lock = threading.Lock()


def _umask() -> int:
    """The process's umask (reading it means setting it: done under a lock, restored at once)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask
