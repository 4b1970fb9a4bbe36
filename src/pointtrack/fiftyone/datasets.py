"""Video datasets: create from files, load by name, metadata read with PyAV, App colours."""

from __future__ import annotations

import glob as globlib
import logging
import mimetypes
import os
from pathlib import Path

import fiftyone as fo
import fiftyone.core.media as fom

from ..video import VideoError, probe
from .labels import DatasetError

logger = logging.getLogger(__name__)

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
    # FiftyOne keeps every added video sample in its in-memory registry until the garbage
    # collector breaks its sample <-> frames cycle, and reloads each from the database after
    # every schema change or `reload()` (~35 ms per tracked sample, arrays deserialised: 1.2 s
    # at the end of a 32-video run on an H200 host). Nobody holds these objects, so forget them.
    del samples
    dataset.clear_cache()
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
