"""pointtrack: track any point through videos and video datasets, stored in FiftyOne."""

from .trackers import list_trackers, load_tracker
from .tracks import Tracks, TracksError
from .video import Clip, VideoError, VideoInfo, iter_frames, probe, read_clip, write_video

__version__ = "0.1.0"

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
