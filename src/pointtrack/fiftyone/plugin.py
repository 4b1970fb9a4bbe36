"""What the FiftyOne plugin (``plugins/pointtrack``) needs from the package: the choices its
forms offer, the tracker it builds from them, and a `track_dataset` run that reports progress.

The plugin's operators stay a thin layer over these functions, so the App, delegated runs and
``pointtrack dataset track`` all go through the same runner.
"""

from __future__ import annotations

from collections.abc import Callable

import fiftyone as fo

from ..trackers import list_trackers, load_tracker
from ..trackers.base import Tracker
from .labels import result_field
from .prompts import _PROMPT_TYPES
from .run import TrackSummary, track_dataset

ENGINES = ("lk", "cotracker3-offline", "cotracker3-online")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")


def prompt_fields(samples) -> list[str]:
    """Names of the frame fields of ``samples`` that can prompt tracking (Detections, Detection,
    Segmentation, Keypoints or Keypoint labels), sorted."""
    schema = samples.get_frame_field_schema() or {}
    return sorted(
        name for name, field in schema.items()
        if getattr(field, "document_type", None) in _PROMPT_TYPES
    )


def tracks_fields(samples) -> list[str]:
    """Names of the frame fields of ``samples`` that hold pointtrack tracks (Keypoints with a
    ``<field>_result`` on the samples), sorted."""
    frame_schema = samples.get_frame_field_schema() or {}
    sample_schema = samples.get_field_schema()
    return sorted(
        name for name, field in frame_schema.items()
        if getattr(field, "document_type", None) is fo.Keypoints
        and result_field(name) in sample_schema
    )


def build_tracker(engine: str, checkpoint: str | None = None, device: str | None = None,
                  precision: str | None = None) -> Tracker:
    """The tracker ``engine``; ``checkpoint``, ``device`` and ``precision`` apply to CoTracker3
    engines only, whose weights are loaded here. Raises `ValueError` naming the problem."""
    if engine not in list_trackers():
        raise ValueError(f"unknown engine {engine!r}; available: {', '.join(list_trackers())}")
    options = {"checkpoint": checkpoint, "device": device, "precision": precision}
    options = {k: v for k, v in options.items() if v}
    if not engine.startswith("cotracker3"):
        if options:
            raise ValueError(f"engine {engine!r} takes no {', '.join(options)}")
        return load_tracker(engine)
    tracker = load_tracker(engine, **options)
    _ = tracker.model  # load the weights now: a bad checkpoint is one error, not one a video
    return tracker


def track_with_progress(
    samples,
    tracker: Tracker,
    label_field: str,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    **options,
) -> TrackSummary:
    """`track_dataset` over ``samples``, calling ``on_progress(samples_finished, total)`` as
    samples finish; ``options`` go to `track_dataset`."""
    return track_dataset(samples, tracker, label_field, progress=on_progress or False,
                         **options)
