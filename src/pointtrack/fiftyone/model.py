"""`TrackerModel`: a FiftyOne video `Model` for ``dataset.apply_model``."""

from __future__ import annotations

import os
from typing import Any

import fiftyone as fo
import fiftyone.core.models as fomo

from ..trackers.base import Tracker
from ..tracks import Tracks
from ..video import read_clip
from .labels import tracks_to_frames


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
