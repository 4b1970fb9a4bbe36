"""Running a tracker over a dataset or view: skip done samples, record errors, resume."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import fiftyone as fo
import fiftyone.core.media as fom
import numpy as np
from fiftyone.core.clips import ClipsView

from ..trackers.base import PromptError, Tracker
from ..video import read_clip
from .labels import (
    DatasetError,
    _clear,
    _name,
    _write,
    error_field,
    prepare_fields,
    result_field,
)
from .prompts import _prompt_label, _prompt_row, check_prompt_field, prompts_from_label

logger = logging.getLogger(__name__)

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

