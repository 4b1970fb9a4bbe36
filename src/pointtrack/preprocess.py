"""Re-encode videos to fewer frames and fewer pixels, so tracking them takes less memory and time.

The default rule is the seed's: a video longer than 10 s keeps every 3rd frame and is written at
7 fps; a shorter one is sampled to 10 fps. ``fps``, ``every`` and ``max_side`` override it.
Every output remembers which source frame each of its frames came from
(`PreprocessResult.frame_numbers`), so tracks made on it map back to the original.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .video import VideoError, VideoInfo, iter_frames, probe, sample_indices, write_video

VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp",
    ".ts",
)

# The seed's rule.
LONG_VIDEO_S = 10.0
LONG_EVERY, LONG_FPS = 3, 7.0
SHORT_FPS = 10.0


@dataclass(frozen=True)
class Plan:
    """How one video is re-encoded.

    Attributes:
        every: keep every k-th source frame (used when ``sample_fps`` is None).
        sample_fps: keep source frames at about this rate instead.
        out_fps: frame rate written to the output.
        size: (W, H) of the output, or None for the source size.
    """

    every: int
    sample_fps: float | None
    out_fps: float
    size: tuple[int, int] | None


@dataclass
class PreprocessResult:
    """One re-encoded video. ``frame_numbers (T,)``: 0-based source index of each output frame."""

    source: Path
    output: Path
    frame_numbers: np.ndarray
    fps: float
    size: tuple[int, int]
    source_fps: float
    source_size: tuple[int, int]

    @property
    def num_frames(self) -> int:
        return int(len(self.frame_numbers))


def fit_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int] | None:
    """(W, H) scaled so the longer side is at most ``max_side`` (even sides, never upscaled)."""
    if max_side is None:
        return None
    w, h = size
    scale = max_side / max(w, h)
    if scale >= 1:
        return None
    # Even sides: H.264/yuv420p needs them, and write_video would otherwise pad.
    return (max(2, 2 * round(w * scale / 2)), max(2, 2 * round(h * scale / 2)))


def make_plan(
    info: VideoInfo,
    *,
    fps: float | None = None,
    every: int | None = None,
    max_side: int | None = None,
) -> Plan:
    """The re-encoding of one video: the seed's rule unless ``fps``/``every`` are given.

    - ``every`` alone: keep every k-th frame, written at source fps / k (same speed).
    - ``fps`` alone: sample to about ``fps``, written at that rate (never above the source's).
    - both: keep every k-th frame, written at ``fps`` (as the seed's rule does for long videos).
    """
    if fps is not None and not fps > 0:
        raise VideoError(f"fps must be > 0, got {fps}")
    if every is not None and (int(every) != every or every < 1):
        raise VideoError(f"every must be an integer >= 1, got {every}")
    if max_side is not None and max_side < 2:
        raise VideoError(f"max side must be >= 2, got {max_side}")
    size = fit_size(info.size, max_side)
    src_fps = info.fps
    if every is None and fps is None:
        duration = info.duration or (info.num_frames / src_fps if src_fps > 0 else 0.0)
        if duration > LONG_VIDEO_S:
            every, fps = LONG_EVERY, LONG_FPS
        elif src_fps > 0:
            return Plan(1, SHORT_FPS, min(SHORT_FPS, src_fps), size)
        else:  # no frame rate to sample by: keep every frame
            return Plan(1, None, SHORT_FPS, size)
    if every is not None:
        out_fps = fps if fps is not None else (src_fps / every if src_fps > 0 else SHORT_FPS)
        return Plan(int(every), None, float(out_fps), size)
    if not src_fps > 0:
        raise VideoError(f"{info.path}: the video has no frame rate; give --every instead of --fps")
    return Plan(1, float(fps), min(float(fps), src_fps), size)


def preprocess_video(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    fps: float | None = None,
    every: int | None = None,
    max_side: int | None = None,
    crf: int = 20,
    progress: bool = False,
) -> PreprocessResult:
    """Re-encode ``source`` to the mp4 ``output`` (written atomically; the source is only read).

    Frames stream from decoder to encoder, resized at decode time: the clip is never held in memory.
    """
    source, output = Path(source), Path(output)
    if output.exists() and output.resolve() == source.resolve():
        raise VideoError(f"{source}: output would overwrite the original")
    info = probe(source)
    plan = make_plan(info, fps=fps, every=every, max_side=max_side)
    frame_numbers: list[int] = []

    def images() -> Iterator[np.ndarray]:
        frames = iter_frames(source, size=plan.size, every=plan.every, fps=plan.sample_fps)
        if progress:
            from tqdm.auto import tqdm

            total = len(sample_indices(info.num_frames, info.fps, every=plan.every,
                                       fps=plan.sample_fps)) if info.fps > 0 else None
            # disable=None: bars on a terminal only, not in logs.
            frames = tqdm(frames, total=total, desc=source.name, unit="frame", leave=False,
                          disable=None)
        for frame in frames:
            frame_numbers.append(frame.index)
            yield frame.image

    write_video(output, images(), plan.out_fps, crf=crf)
    return PreprocessResult(
        source=source,
        output=output,
        frame_numbers=np.asarray(frame_numbers, dtype=np.int64),
        fps=plan.out_fps,
        size=plan.size or info.size,
        source_fps=info.fps,
        source_size=info.size,
    )


def find_videos(
    inputs: Iterable[str | os.PathLike], *, exclude: str | os.PathLike | None = None
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Expand files and directories into ``(video, path relative to the output dir)`` pairs.

    Directories are searched recursively for video extensions (their layout is kept in the
    output); anything under ``exclude`` (the output dir) is skipped. Returns the pairs and one
    error message per input that gave nothing.
    """
    exclude = Path(exclude).resolve() if exclude is not None else None
    pairs: list[tuple[Path, Path]] = []
    errors: list[str] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(
                p for p in item.rglob("*")
                if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
                and not (exclude and p.resolve().is_relative_to(exclude))
            )
            if not found:
                errors.append(f"{item}: no videos in this directory")
            pairs += [(p, p.relative_to(item).with_suffix(".mp4")) for p in found]
        elif item.exists():
            pairs.append((item, Path(item.stem + ".mp4")))
        else:
            errors.append(f"{item}: no such file or directory")
    return pairs, errors


def add_to_dataset(name: str, results: list[PreprocessResult]):
    """Add (or refresh) one video sample per result in the FiftyOne dataset ``name``.

    Creates a persistent dataset if missing. Metadata is read with PyAV
    (`pointtrack.fiftyone.video_metadata`: the App needs it, FiftyOne's own reader needs
    ffprobe). Each sample stores ``source_filepath`` and ``source_frame_numbers``: output frame
    ``k`` (FiftyOne's 1-based frame number) was source frame ``source_frame_numbers[k - 1]``
    (0-based), which maps tracks back to the original.
    """
    import fiftyone as fo

    from .fiftyone import video_metadata

    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
        if dataset.media_type not in (None, "video") and len(dataset):
            raise VideoError(f"dataset {name!r} holds {dataset.media_type}s, not videos")
    else:
        dataset = fo.Dataset(name, persistent=True)
    existing = dict(zip(dataset.values("filepath"), dataset.values("id"), strict=True))
    new = []
    for r in results:
        fields = {
            "source_filepath": str(r.source.resolve()),
            "source_frame_numbers": [int(i) for i in r.frame_numbers],
            "source_fps": float(r.source_fps),
            "metadata": video_metadata(r.output),
        }
        filepath = str(r.output.resolve())
        if filepath in existing:  # re-run: the video was rewritten, refresh what we know of it
            sample = dataset[existing[filepath]]
            for key, value in fields.items():
                sample[key] = value
            sample.save()
        else:
            new.append(fo.Sample(filepath=filepath, **fields))
    if new:
        dataset.add_samples(new)
    return dataset
