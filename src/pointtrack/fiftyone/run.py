"""Running a tracker over a dataset or view: the glue between `pointtrack.runners` and labels.

`SampleWork` is the runners' `Work` for video samples: claim a sample (`claims`), decode it
and build its prompt, track it, write its labels (`labels`), or record why it failed.
`track_dataset` picks the runner: ``"local"`` (pipelined, the default), ``"sequential"`` or
``"ray"``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fiftyone as fo
import fiftyone.core.media as fom
import numpy as np
from fiftyone.core.clips import ClipsView

from ..runners import Job, Outcome, RunAborted, read_clip_offloaded, run_local, run_sequential
from ..trackers.base import (
    PromptError,
    Tracker,
    feed_and_finish,
    stream_batch,
    stream_held_frames,
)
from ..video import (
    VideoError,
    VideoInfo,
    count_kept,
    iter_frames,
    probe,
    sample_indices,
    sampled_fps,
)
from .claims import Claims, Heartbeat
from .labels import (
    DatasetError,
    _clear,
    _name,
    _result,
    _write,
    _write_frames,
    _write_result,
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


_LOADING = threading.Lock()

#: Clips whose decoded frames would take more than this go a batch at a time into engines
#: that stream (online CoTracker3, LK), decoded while tracking, so a long video holds one
#: batch and the engine's window instead of the whole clip. Shorter clips are decoded whole,
#: ahead of the tracker, which keeps the GPU fed on datasets of many short videos.
STREAM_OVER_BYTES = 2**30


@dataclass
class _Streamed:
    """A clip to decode while it is tracked: its file, metadata and sampled frame numbers."""

    path: str
    info: VideoInfo
    frame_numbers: np.ndarray


@dataclass
class SampleWork:
    """The `pointtrack.runners.Work` of `track_dataset` (plain data: it pickles to store
    processes and Ray workers, each of which opens the dataset by name)."""

    dataset_name: str
    label_field: str
    input_size: tuple[int, int] | None
    sampling: dict
    grid_size: int
    queries: np.ndarray | None
    prompt_name: str | None
    prompt_frame: int | None
    mask_targets: dict | None
    backward_tracking: bool
    include_occluded: bool
    overwrite: bool
    settings: dict
    claims: Claims
    #: ``tracker.check_memory`` where loading runs beside the tracker (the local runners):
    #: a clip too long for memory is refused, with advice, before it is decoded. It stays in
    #: this process: store processes and Ray workers get the work without it.
    memory_check: Callable | None = None
    #: For Ray: the tracker without its model (`Tracker.estimator`), which travels with the
    #: work to the workers that decode; they check their node's memory with it, not the
    #: GPU's (that is the tracker actor's, maybe on another node).
    estimator: Tracker | None = None
    #: The engine streams (and the run tracks forward only): long clips are decoded while
    #: they are tracked (`STREAM_OVER_BYTES`). ``stream_late_queries``: see `Tracker`.
    streams: bool = False
    stream_late_queries: bool = True

    def __getstate__(self) -> dict:
        return {**self.__dict__, "memory_check": None}

    def dataset(self) -> fo.Dataset:
        # One object per process (FiftyOne caches it). Loader threads claim at once, and
        # `fo.load_dataset` is not thread-safe: its cache pops the object and puts it back,
        # so a second thread in between makes a new object that replaces the caller's.
        with _LOADING:
            dataset = fo.load_dataset(self.dataset_name)
            if not dataset.has_field(result_field(self.label_field)):
                # A worker that served an earlier run holds the schema of that time.
                dataset.reload()
        return dataset

    def _is_done(self, sample_id: str) -> bool:
        done = self.dataset().select(sample_id).values(
            f"{result_field(self.label_field)}.num_frames")
        return bool(done) and done[0] is not None

    def claim(self, job: Job) -> bool:
        with _database(self.dataset_name):
            if not self.claims.take(job.key):
                return False
            if not self.overwrite and self._is_done(job.key):
                self.claims.release(job.key)
                return False
            return True

    def load(self, job: Job) -> tuple:
        streamed = self._streamed(job)
        if streamed is not None:
            frame_numbers, source_size = streamed.frame_numbers, streamed.info.size
        else:
            self._check_memory(job)
            clip = read_clip_offloaded(job.path, size=self.input_size, **self.sampling)
            frame_numbers, source_size = clip.frame_numbers, clip.source_size
        row = _prompt_row(frame_numbers, self.prompt_frame)
        queries, sources = self.queries, None
        if self.prompt_name is not None:
            with _database(self.dataset_name):
                label = _prompt_label(self.dataset(), job.key, self.prompt_name, row,
                                      frame_numbers)
            xy, sources = prompts_from_label(label, source_size, self.grid_size,
                                             self.mask_targets)
            queries = np.concatenate([np.full((len(xy), 1), row), xy], axis=1)
        if streamed is not None and not self.stream_late_queries:
            starts = [row] if queries is None else queries[:, 0]
            if any(t != 0 for t in starts):  # a forward-only stream would start them late
                self._check_memory(job)
                streamed, clip = None, read_clip_offloaded(job.path, size=self.input_size,
                                                           **self.sampling)
        return (clip if streamed is None else streamed), row, queries, sources

    def _streamed(self, job: Job) -> _Streamed | None:
        """The clip as a `_Streamed` when it is long enough to decode while tracking."""
        if not self.streams:
            return None
        info = probe(job.path)
        kept = count_kept(info.num_frames, info.fps, **self.sampling)
        w, h = self.input_size or info.size
        if kept * w * h * 3 <= STREAM_OVER_BYTES:
            return None
        self._check_memory(job, held_frames=stream_held_frames((w, h)))
        rows = sample_indices(info.num_frames, info.fps, **self.sampling)
        if len(rows) == 0:
            raise VideoError(f"{job.path}: no frames in the requested range")
        return _Streamed(job.path, info, rows)

    def _check_memory(self, job: Job, held_frames: int | None = None) -> None:
        """A `PromptError` with advice when ``job``'s clip would not fit in memory
        (``held_frames``: a streamed clip holds that many frames at a time)."""
        check = self.memory_check
        if check is None and self.estimator is not None:
            check = functools.partial(self.estimator.check_memory, on_device=False)
        if check is None:
            return
        info = probe(job.path)
        points = self.grid_size**2 if self.queries is None else len(self.queries)
        check(count_kept(info.num_frames, info.fps, **self.sampling), info.size, points,
              what=job.path, held_frames=held_frames)

    def track(self, tracker: Tracker, job: Job, loaded: tuple) -> tuple:
        clip, row, queries, sources = loaded
        if isinstance(clip, _Streamed):
            return self._track_streamed(tracker, clip, row, queries), sources
        tracks = tracker.track(
            clip,
            grid_size=0 if queries is not None else self.grid_size,
            queries=queries,
            grid_query_frame=row,
            backward_tracking=self.backward_tracking,
        )
        return tracks, sources

    def _track_streamed(self, tracker: Tracker, clip: _Streamed, row: int,
                        queries: np.ndarray | None):
        """`track` of a clip decoded a batch at a time into the engine's stream: the same
        tracks as from the whole decoded clip."""
        size = self.input_size or clip.info.size
        batch = stream_batch(size)
        stream = tracker.stream(grid_size=0 if queries is not None else self.grid_size,
                                queries=queries, grid_query_frame=row,
                                source_size=clip.info.size)
        frames = iter_frames(clip.path, size=self.input_size, **self.sampling)
        return feed_and_finish(tracker, stream, frames, batch, what=clip.path,
                               fps=sampled_fps(clip.info.fps, every=self.sampling["every"],
                                               fps=self.sampling["fps"]))

    def store(self, job: Job, result: tuple) -> None:
        tracks, sources = result
        with _database(self.dataset_name):
            _write(self.dataset(), job.key, tracks, self.label_field,
                   include_occluded=self.include_occluded, sources=sources,
                   settings=self.settings)
            self.claims.release(job.key)

    # The same store in parts (`pointtrack.runners.PartedStore`): the run's store processes
    # share the frames of its last videos.

    def store_begin(self, job: Job) -> None:
        with _database(self.dataset_name):
            _clear(self.dataset(), job.key, self.label_field)

    def store_part(self, job: Job, result: tuple, part: int, parts: int) -> None:
        tracks, sources = result
        rows = np.array_split(np.arange(tracks.num_frames), parts)[part]
        with _database(self.dataset_name):
            _write_frames(self.dataset(), job.key, tracks, self.label_field,
                          include_occluded=self.include_occluded, sources=sources, rows=rows)

    def store_end(self, job: Job, result: tuple) -> None:
        tracks, sources = result
        with _database(self.dataset_name):
            dataset = self.dataset()
            doc = _result(dataset, job.key, tracks, self.label_field, sources, self.settings)
            _write_result(dataset, job.key, self.label_field, doc)
            self.claims.release(job.key)

    def fail(self, job: Job, message: str) -> None:
        with _database(self.dataset_name):
            dataset = self.dataset()
            _clear(dataset, job.key, self.label_field)
            dataset.set_values(error_field(self.label_field), {job.key: message},
                               key_field="id")
            self.claims.release(job.key)


def _frames_to_track(length: int | None, rate: float | None, sampling: dict) -> float | None:
    """About how many frames of a video the run tracks, from its metadata (the job's cost,
    which orders the pipelined runs: `pointtrack.runners.run_order`); None if unknown."""
    if not length:
        return None
    try:
        return float(count_kept(length, rate or 0.0, **sampling))
    except ValueError:  # sampling the video cannot satisfy: its load says so
        return None


@contextlib.contextmanager
def _database(dataset_name: str):
    """Turns a lost database connection into `RunAborted`: no later sample could be stored,
    so the run stops with one clear error instead of timing out on every sample."""
    from pymongo.errors import ConnectionFailure

    try:
        yield
    except ConnectionFailure as e:
        # Never print credentials: mongodb://user:password@host -> mongodb://host
        uri = re.sub(r"//[^/@]*@", "//", fo.config.database_uri or "FiftyOne's database")
        raise RunAborted(
            f"lost the database ({uri}) while tracking '{dataset_name}': "
            f"{str(e).splitlines()[0][:200]}; rerun when it is back to resume"
        ) from e


BACKENDS = ("local", "sequential", "ray")


def track_dataset(
    samples,
    tracker: Tracker | list[Tracker],
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
    progress: bool | Callable[[int, int], None] = True,
    backend: str = "local",
    ray_address: str | None = None,
    runner_options: dict | None = None,
    on_outcome=None,
) -> TrackSummary:
    """Track every video of a dataset or view and store the tracks (see `pointtrack.fiftyone`).

    Each video is decoded straight to ``tracker.input_size``, sampled by ``every`` / ``fps`` /
    ``max_frames``. Samples that already hold ``<label_field>_result`` are skipped unless
    ``overwrite``, and so are samples another run is tracking right now (a claim per sample in
    MongoDB). A sample that fails gets its error in ``<label_field>_error`` and in the
    summary, and the run goes on; a lost database stops the run with `RunAborted`. Each
    sample's result is written after its frames, so an interrupted run resumes where it
    stopped.

    Args:
        tracker: the engine; for the local backend also a list of engines (copies of one
            model), each tracking on a thread of its own.
        grid_size: grid points per side over the frame, or per box/mask with ``prompt_field``.
        queries: ``(N, 3)`` rows of (t, x, y) in source pixels, t a row of the tracked clip;
            the same for every sample.
        prompt_field: a frame field of Detections, Segmentation or Keypoints whose labels on
            ``prompt_frame`` become the queries.
        prompt_frame: 1-based FiftyOne frame number of the prompt labels (and of the grid);
            must be a sampled frame. Default: the first tracked frame.
        backend: ``"local"``: decoding ahead and storing behind the tracker, on this machine
            (`pointtrack.runners.run_local`); ``"sequential"``: one stage after another;
            ``"ray"``: over a Ray cluster (`pointtrack.runners.ray.run_ray`, needs
            ``pointtrack[ray]``), at ``ray_address`` or a local one.
        runner_options: keyword arguments of the runner (e.g. ``loaders``,
            ``store_processes``, ``processes``: tracking processes sharing the device; for
            Ray ``num_actors``, ``num_gpus``).
        progress: a progress bar (True), none (False), or a function called with
            ``(samples finished, samples in all)`` as samples finish.
        on_outcome: called with each `pointtrack.runners.Outcome` as samples finish.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if samples.media_type != fom.VIDEO:
        raise DatasetError(f"'{_name(samples)}' holds {samples.media_type}, not videos")
    if isinstance(samples, ClipsView):
        raise DatasetError("clip views are not supported: track the videos' dataset or a view")
    dataset = _root_dataset(samples)
    # Several trackers (copies of one engine) track side by side in the local runner.
    first = tracker[0] if isinstance(tracker, list | tuple) else tracker
    prompt_name = check_prompt_field(dataset, prompt_field) if prompt_field else None
    if prompt_name is not None and queries is not None:
        raise PromptError("give either queries or a prompt field, not both")
    logger.debug("run %s: checked", label_field)
    prepare_fields(dataset, label_field)
    logger.debug("run %s: fields declared", label_field)

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
    work = SampleWork(
        dataset_name=dataset.name,
        label_field=label_field,
        input_size=first.input_size,
        sampling=dict(every=every, fps=fps, max_frames=max_frames),
        grid_size=grid_size,
        queries=None if queries is None else np.asarray(queries, dtype=np.float64),
        prompt_name=prompt_name,
        prompt_frame=prompt_frame,
        mask_targets=dataset.mask_targets.get(prompt_name) or dataset.default_mask_targets,
        backward_tracking=backward_tracking,
        include_occluded=include_occluded,
        overwrite=overwrite,
        settings=settings,
        claims=Claims(dataset._doc.id, label_field),
        memory_check=None if backend == "ray" else first.check_memory,
        estimator=first.estimator() if backend == "ray" else None,
        streams=first.streams and not backward_tracking,
        stream_late_queries=first.stream_late_queries,
    )
    ids, paths, done, lengths, rates = samples.values(
        ["id", "filepath", f"{result_field(label_field)}.num_frames",
         "metadata.total_frame_count", "metadata.frame_rate"])
    summary = TrackSummary(label_field)
    # Done samples are skipped here at once; `SampleWork.claim` checks again, after claiming.
    jobs = []
    for sample_id, path, is_done, length, rate in zip(ids, paths, done, lengths, rates,
                                                       strict=True):
        if is_done is not None and not overwrite:
            summary.skipped.append(sample_id)
        else:
            jobs.append(Job(sample_id, path, _frames_to_track(length, rate, work.sampling)))

    from tqdm.auto import tqdm

    report = progress if callable(progress) else None
    bar = tqdm(total=len(ids), initial=len(summary.skipped), desc=f"track {label_field}",
               unit="video", disable=report is not None or not progress)
    if report is not None:
        report(len(summary.skipped), len(ids))

    def record(outcome: Outcome) -> None:
        key = outcome.job.key
        if outcome.status == "done":
            summary.done.append(key)
        elif outcome.status == "skipped":
            summary.skipped.append(key)
        else:
            summary.failed[key] = outcome.error or "failed"
            bar.set_postfix(failed=len(summary.failed))
        bar.update()
        if report is not None:
            report(len(summary.done) + len(summary.skipped) + len(summary.failed), len(ids))
        if on_outcome is not None:
            on_outcome(outcome)

    options = dict(runner_options or {})
    # Debug records mark the run's phases (`benchmarks/dataset_throughput.py` times them).
    logger.debug("run %s: %d jobs listed", label_field, len(jobs))
    try:
        with Heartbeat(work.claims):
            if backend == "sequential":
                run_sequential(jobs, work, first, on_outcome=record, **options)
            elif backend == "local":
                run_local(jobs, work, tracker, on_outcome=record, **options)
            else:
                from ..runners.ray import run_ray

                run_ray(jobs, work, first, address=ray_address, on_outcome=record, **options)
            logger.debug("run %s: runner returned", label_field)
        logger.debug("run %s: claims released", label_field)
    finally:
        bar.close()
        try:
            dataset.reload()  # refresh samples and frames that callers hold in memory
        except Exception:  # noqa: BLE001 -- the database may be what stopped the run
            pass
        logger.debug("run %s: dataset reloaded", label_field)
    return summary


