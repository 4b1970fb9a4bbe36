"""`add_overlays`: rendered overlay videos beside the originals, as a grouped dataset.

FiftyOne shows the slices of a group side by side, but a grouped dataset must be grouped from
its creation (an existing dataset cannot gain slices without becoming another kind of
dataset, which would change it under every other user of it). So the overlays go into a new
grouped dataset ``<name>-overlays``: per tracked sample a group with the slice ``original``
(a copy of the sample with its frames, so the tracks' keypoints stay) and the slice
``overlay`` (the mp4 drawn by `pointtrack.render`). Each sample of the group records
``source_id``, the id of the sample it came from. The source dataset is left unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import fiftyone as fo
from fiftyone import ViewField as F

from ..render import render_video
from .datasets import color_scheme, video_metadata
from .labels import DatasetError, result_field, tracks_from_sample

SLICES = ("original", "overlay")


@dataclass
class OverlaySummary:
    """What `add_overlays` did: the grouped dataset and the source sample ids rendered and
    skipped (an overlay already there)."""

    dataset: fo.Dataset
    rendered: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.dataset.name}: {len(self.rendered)} overlays rendered, "
                f"{len(self.skipped)} skipped (already rendered)")


def add_overlays(
    samples,
    label_field: str = "tracks",
    out_dir: str | os.PathLike | None = None,
    *,
    name: str | None = None,
    overwrite: bool = False,
    max_side: int | None = None,
    trail: int = 10,
    progress: bool = False,
) -> OverlaySummary:
    """Render the ``label_field`` tracks of each tracked sample and group them with a copy of
    the sample in the grouped dataset ``name`` (default ``<dataset>-overlays``).

    Overlays are written atomically to ``out_dir`` (default: FiftyOne's dataset directory /
    ``name``) as ``<video stem>.<sample id>.<label_field>.mp4``. Samples already rendered are
    skipped unless ``overwrite``, which replaces their group (and refreshes the copy).
    """
    source = samples._dataset
    if not samples.has_sample_field(result_field(label_field)):
        raise DatasetError(f"dataset '{source.name}' has no tracks field '{label_field}'")
    name = name or f"{source.name}-overlays"
    if name == source.name:
        raise DatasetError("the overlays dataset must be another dataset than the source")
    out_dir = Path(out_dir) if out_dir else Path(fo.config.default_dataset_dir) / name
    groups = _groups_dataset(name, persistent=source.persistent)
    done = {}
    if "overlay" in (groups.group_slices or []):
        overlays = groups.select_group_slices("overlay")
        done = dict(zip(*overlays.values(["source_id", "filepath"]), strict=True))

    summary = OverlaySummary(groups)
    todo = samples.exists(result_field(label_field))
    if progress:
        from tqdm.auto import tqdm

        todo = tqdm(todo, total=len(todo), desc="overlays", unit="video", disable=None)
    for sample in todo:
        if not overwrite and sample.id in done and Path(done[sample.id]).is_file():
            summary.skipped.append(sample.id)
            continue
        tracks = tracks_from_sample(sample, label_field)
        path = out_dir / f"{Path(sample.filepath).stem}.{sample.id}.{label_field}.mp4"
        render_video(sample.filepath, tracks, path, max_side=max_side, trail=trail)
        if sample.id in done:  # the group of an earlier run is replaced whole
            old = groups.select_group_slices().match(F("source_id") == sample.id)
            groups.delete_groups(old.distinct("group.id"))
        group = fo.Group()
        original = sample.copy()  # with its frames: the keypoints show on the original
        original["group"] = group.element("original")
        original["source_id"] = sample.id
        overlay = fo.Sample(filepath=str(path), group=group.element("overlay"),
                            source_id=sample.id, metadata=video_metadata(str(path)))
        groups.add_samples([original, overlay])
        summary.rendered.append(sample.id)
    if groups.default_group_slice != "original" and len(groups):
        groups.default_group_slice = "original"
    color_scheme(label_field, groups)
    return summary


def _groups_dataset(name: str, persistent: bool) -> fo.Dataset:
    if fo.dataset_exists(name):
        groups = fo.load_dataset(name)
        if groups.media_type != "group" or (
            len(groups) and not set(groups.group_slices) <= set(SLICES)
        ):
            raise DatasetError(f"dataset '{name}' exists and is not an overlays dataset "
                               f"(slices {', '.join(SLICES)})")
        return groups
    groups = fo.Dataset(name, persistent=persistent)
    groups.add_group_field("group", default="original")
    return groups
