"""pointtrack: track any point through videos and video datasets, stored in FiftyOne."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public names and the module that holds each. Imported on first use, so that
# `import pointtrack.models.cotracker3` needs only torch (e.g. on a bare GPU machine)
# and the CLI starts fast.
_EXPORTS = {
    "Tracks": "tracks",
    "TracksError": "tracks",
    "Clip": "video",
    "VideoError": "video",
    "VideoInfo": "video",
    "iter_frames": "video",
    "probe": "video",
    "read_clip": "video",
    "write_video": "video",
    "list_trackers": "trackers",
    "load_tracker": "trackers",
}

__all__ = [
    "Clip",
    "Tracks",
    "TracksError",
    "VideoError",
    "VideoInfo",
    "iter_frames",
    "list_trackers",
    "load_tracker",
    "probe",
    "read_clip",
    "write_video",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'pointtrack' has no attribute {name!r}")


if TYPE_CHECKING:
    from .trackers import list_trackers, load_tracker
    from .tracks import Tracks, TracksError
    from .video import Clip, VideoError, VideoInfo, iter_frames, probe, read_clip, write_video
