"""FiftyOne integration: video datasets in, per-frame ``fo.Keypoints`` out.

- `labels`: tracks <-> labels (per-frame keypoints, the exact result on the sample).
- `prompts`: query points from existing detections, masks or keypoints.
- `datasets`: create and load video datasets, App colours.
- `run`: `track_dataset`, the runner glue (skip done samples, record errors, resume).
- `model`: `TrackerModel` for ``apply_model``.
- `zoo`: the FiftyOne zoo model source (`register_zoo_source`).
- `overlays`: `add_overlays`, overlay videos beside the originals (a grouped dataset).
- `evaluation`: `evaluate_tracks`, TAP-Vid metrics as a FiftyOne evaluation run.
"""

from .datasets import color_scheme, create_dataset, load_dataset, video_metadata
from .evaluation import TrackEvaluationResults, evaluate_tracks
from .labels import (
    KEYPOINT_ATTRIBUTES,
    DatasetError,
    Sources,
    add_tracks,
    error_field,
    prepare_fields,
    result_field,
    sources_from_sample,
    tracks_from_sample,
    tracks_to_doc,
    tracks_to_frames,
)
from .model import TrackerModel
from .overlays import OverlaySummary, add_overlays
from .prompts import check_prompt_field, prompts_from_label
from .run import TrackSummary, track_dataset
from .zoo import register_zoo_source

__all__ = [
    "KEYPOINT_ATTRIBUTES",
    "DatasetError",
    "Sources",
    "OverlaySummary",
    "TrackEvaluationResults",
    "TrackSummary",
    "TrackerModel",
    "add_overlays",
    "add_tracks",
    "check_prompt_field",
    "color_scheme",
    "create_dataset",
    "error_field",
    "evaluate_tracks",
    "load_dataset",
    "prepare_fields",
    "prompts_from_label",
    "register_zoo_source",
    "result_field",
    "sources_from_sample",
    "track_dataset",
    "tracks_from_sample",
    "tracks_to_doc",
    "tracks_to_frames",
    "video_metadata",
]
