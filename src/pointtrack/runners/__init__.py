"""Runners: one tracker over many videos.

A run is a list of `Job`s (one video each) and a `Work` that says, per job, how to

- ``claim`` it (so that concurrent runs never do the same job twice),
- ``load`` it (CPU: decode the video at the tracker's size, build its prompt),
- ``track`` it (the accelerator),
- ``store`` the result (CPU: labels into a database), or record why it ``fail``-ed.

The runners know nothing of FiftyOne: `pointtrack.fiftyone` provides the `Work` for dataset
samples. `run_sequential` does one stage after another (the reference behaviour);
`run_local` pipelines them on one machine (decoding ahead, storing behind, each bounded);
`pointtrack.runners.ray.run_ray` spreads them over a Ray cluster. All three report one
`Outcome` per job, in the order jobs finish.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import mmap
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..trackers.base import Tracker
from ..video import Clip, read_clip

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One video to track: ``key`` names it to the `Work` (a sample id), ``path`` is its file;
    ``cost``, where known, how much work it is (its frames to track), for `run_order`."""

    key: str
    path: str
    cost: float | None = None


def run_order(jobs: Iterable[Job]) -> list[Job]:
    """The order in which `run_local` and `run_ray` take ``jobs``, where their ``cost`` is
    known: the cheapest first, since the GPU waits for its decode alone; then the costliest
    first (longest processing time first: trackers sharing the jobs end together, and the
    run ends on a cheap store, which nothing is left to overlap). Jobs of unknown cost come
    right after the first, in their order; ties keep theirs."""
    jobs = list(jobs)
    known = sorted((job for job in jobs if job.cost is not None), key=lambda job: -job.cost)
    if not known:
        return jobs
    return [known[-1], *(job for job in jobs if job.cost is None), *known[:-1]]


@dataclass
class Outcome:
    """What became of a job: ``status`` is "done", "failed" (``error`` says why) or
    "skipped" (claimed by another run); ``seconds`` times each stage; ``worker`` is the pid
    of the process that tracked it, ``loader`` of the one that decoded it; ``times`` when
    tracking ran."""

    job: Job
    status: str
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    worker: int | None = None
    #: Wall-clock (``time.time()``) start and end of tracking, where the runner knows them:
    #: ``{"track": (start, end)}``; a benchmark reads the tracker's idle gaps from them.
    #: Also ``"claim"`` and ``"load"`` in the local runner, and ``"load"``, ``"store"`` and
    #: ``"submitted"`` (when the job was handed to Ray: start and end are that moment) in
    #: Ray runs.
    times: dict[str, tuple[float, float]] = field(default_factory=dict)
    loader: int | None = None


class Work(Protocol):
    """What a run does with each job (see the module docstring). Must pickle for Ray and
    for store processes."""

    def claim(self, job: Job) -> bool: ...

    def load(self, job: Job) -> Any: ...

    def track(self, tracker: Tracker, job: Job, loaded: Any) -> Any: ...

    def store(self, job: Job, result: Any) -> None: ...

    def fail(self, job: Job, message: str) -> None: ...


class PartedStore(Protocol):
    """Optional for a `Work`: its store in steps that together do what ``store`` does:
    ``store_begin``, then every ``store_part(job, result, k, parts)`` at once, in any order
    and process, then ``store_end``. `run_local` splits the stores of a run's last videos
    over its store processes: nothing is left for those stores to overlap, so the run waits
    for them."""

    def store_begin(self, job: Job) -> None: ...

    def store_part(self, job: Job, result: Any, part: int, parts: int) -> None: ...

    def store_end(self, job: Job, result: Any) -> None: ...


OnOutcome = Callable[[Outcome], None]


class RunAborted(RuntimeError):
    """An error that no later job can escape (the database is gone, say): the run stops
    with it instead of recording it on every job."""


def error_message(e: BaseException) -> str:
    return str(e) or type(e).__name__


def _timed(fn: Callable, *args) -> tuple[Any, float]:
    t = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - t


def _clocked(fn: Callable, *args) -> tuple[Any, float, tuple[float, float]]:
    """`_timed`, with the wall-clock (``time.time()``) start and end, as `Outcome.times`
    holds them."""
    started = time.time()
    value, seconds = _timed(fn, *args)
    return value, seconds, (started, started + seconds)


def _stored(work: Work, job: Job, result: Any) -> float:
    return _timed(work.store, job, result)[1]


def _stored_in_parts(work: PartedStore, job: Job, result: Any, pool: Executor,
                     parts: int) -> Future:
    """`PartedStore`: the begin and end steps here, the parts in ``pool``; the store's
    seconds (or its error) as a finished future."""
    stored: Future = Future()
    t = time.perf_counter()
    try:
        work.store_begin(job)
        futures = [pool.submit(work.store_part, job, result, k, parts) for k in range(parts)]
        concurrent.futures.wait(futures)  # all of them, even after an error: nothing late
        for future in futures:
            future.result()
        work.store_end(job, result)
    except Exception as e:  # noqa: BLE001 -- the runner records it as the store's error
        stored.set_exception(e)
    else:
        stored.set_result(time.perf_counter() - t)
    return stored


class _Run:
    """Outcome bookkeeping shared by the runners: report, record failures, go on."""

    def __init__(self, work: Work, on_outcome: OnOutcome | None) -> None:
        self.work = work
        self.on_outcome = on_outcome
        self.outcomes: list[Outcome] = []

    def report(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def done(self, job: Job, seconds: dict[str, float], worker: int | None = None,
             times: dict | None = None, loader: int | None = None) -> None:
        self.report(Outcome(job, "done", seconds=seconds, worker=worker, times=times or {},
                            loader=loader))

    def failed(self, job: Job, e: BaseException | str, worker: int | None = None) -> None:
        if isinstance(e, RunAborted):
            raise e
        message = e if isinstance(e, str) else error_message(e)
        if message.startswith(f"{job.path}:"):  # the video layer's errors name the file
            logger.warning("%s: %s", job.key, message)
        else:
            logger.warning("%s (%s): %s", job.key, job.path, message)
        try:
            self.work.fail(job, message)
        except Exception as e2:  # noqa: BLE001 -- the failure itself is still reported
            logger.error("could not record the failure of %s: %s", job.key, error_message(e2))
        self.report(Outcome(job, "failed", error=message, worker=worker))

    def skipped(self, job: Job) -> None:
        self.report(Outcome(job, "skipped"))


def run_sequential(
    jobs: Iterable[Job], work: Work, tracker: Tracker, *, on_outcome: OnOutcome | None = None
) -> list[Outcome]:
    """Each job claimed, loaded, tracked and stored before the next starts."""
    run = _Run(work, on_outcome)
    for job in jobs:
        if not work.claim(job):
            run.skipped(job)
            continue
        try:
            loaded, t_load = _timed(work.load, job)
            result, t_track = _timed(work.track, tracker, job, loaded)
            del loaded
            t_store = _stored(work, job, result)
        except Exception as e:  # noqa: BLE001 -- any failure is recorded and the run goes on
            run.failed(job, e, os.getpid())
            continue
        run.done(job, {"load": t_load, "track": t_track, "store": t_store}, os.getpid(),
                 loader=os.getpid())
    return run.outcomes


def default_store_processes(tracker: Tracker) -> int:
    """Store processes for `run_local`: none on CPU (tracking is the slow stage, a thread
    keeps up), else a quarter of the cores, at most 4: a store encodes ~100k keypoints in
    ~0.1 s and MongoDB takes ~0.3 s to write them, so a few keep up with a GPU, and each
    more is a process importing FiftyOne and competing for the cores that decode and launch
    kernels. Not a thread of the tracking process: that would hold its GIL."""
    device = getattr(tracker, "device", None)
    if device is None or getattr(device, "type", str(device)) == "cpu":
        return 0
    return max(1, min(4, (os.cpu_count() or 2) // 4))


def default_loader_processes(tracker: Tracker) -> bool:
    """Decode in processes (`read_clip_offloaded`) where stores go to processes: on an
    accelerator, where the tracking thread's GIL matters. Linux only: frames come back
    through ``/dev/shm``."""
    return sys.platform == "linux" and default_store_processes(tracker) > 0


def _lower_priority() -> None:
    """Make the calling thread (and the threads it starts, such as a decoder's) yield the CPU
    to the tracking thread: launching GPU work is CPU-bound, and every millisecond it waits
    for a core is a millisecond the GPU idles. Linux nice values are per thread."""
    if getattr(_lowered, "done", False):  # once per thread (Ray runs many tasks on one)
        return
    _lowered.done = True
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + 5))
    except (AttributeError, OSError):  # not Linux, or not allowed: run at the same priority
        pass


_lowered = threading.local()


def _store_pool(processes: int, work: Work) -> Executor:
    if processes == 0:
        return ThreadPoolExecutor(1, thread_name_prefix="pointtrack-store",
                                  initializer=_lower_priority)
    return _process_pool(processes, work)[0]


def _process_pool(processes: int, work: Work | None) -> tuple[ProcessPoolExecutor, list[Future]]:
    """``processes`` spawned helper processes (stores, decoding), started now; also the
    futures of their start-up."""
    import multiprocessing

    # spawn, not fork: the tracking process holds CUDA and database connections.
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_helper_process_started)
    started: list[Future] = []

    # Start every process now, each unpickling the work (importing what a store needs: a few
    # seconds), while the first videos decode and track, not when their stores are due. From
    # a thread of lower priority: a new process inherits its parent thread's nice value, so
    # their imports already yield the cores to the first decodes and kernel launches.
    def start() -> None:
        _lower_priority()
        started.extend(pool.submit(_ready, work) for _ in range(processes))

    with _script_not_rerun():
        starter = threading.Thread(target=start, name="pointtrack-helpers-start")
        starter.start()
        starter.join()
    return pool, started


@contextlib.contextmanager
def _script_not_rerun() -> Iterator[None]:
    """Spawn imports the caller's ``__main__`` script in each new process; a script without
    an ``if __name__ == "__main__":`` guard would start its run again in every store process
    (and fail). Store processes need nothing from the script, so while they start, the
    script's path and module spec are hidden from multiprocessing."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__")
             if main is not None and k in main.__dict__}
    for k in saved:
        setattr(main, k, None) if k == "__spec__" else delattr(main, k)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


def _helper_process_started() -> None:
    """A store or decoding process's set-up: a lower priority, and an end if its run's
    process dies (a pool's process waits for work on a queue whose other end its siblings
    also hold, so it would never see the run's process go)."""
    _lower_priority()
    run_process = os.getppid()

    def watch() -> None:
        while os.getppid() == run_process:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="pointtrack-orphan-watch", daemon=True).start()


@contextlib.contextmanager
def _stores_ended(pool: Executor, aborted: list) -> Iterator[Executor]:
    """``pool`` until the ``with`` block ends. After a run that stored everything, the run
    returns without waiting for the store processes to exit (about a second for four):
    they end on their own (`_shut_down_behind`), and each also ends if this process dies
    (`_helper_process_started`)."""
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True)
        raise
    if aborted:
        pool.shutdown(wait=True)
    else:
        _shut_down_behind(pool)


def _shut_down_behind(pool: Executor, *, cancel_futures: bool = False) -> None:
    """Shut ``pool`` down without waiting here for its processes to exit. A thread of its
    own waits, holding the last reference: when CPython collects a process pool, the
    collecting thread takes a lock that the pool's manager thread holds while it joins the
    processes, so a plain ``shutdown(wait=False)`` only moved the wait to wherever the pool
    was dropped (1.0 s at the end of every run on an H200 host, `benchmarks/NOTES.md`)."""
    threading.Thread(target=pool.shutdown, kwargs={"wait": True, "cancel_futures": cancel_futures},
                     name="pointtrack-pool-shutdown", daemon=True).start()


def _ready(work: Work | None) -> None:
    """A helper process's first task: starting (and unpickling ``work``, for a store
    process: the imports a store needs) was the point."""


_SKIPPED = object()  # a load task's result when another run holds the job


def _claimed_load(work: Work, job: Job, here: bool = False) -> Any:
    """Claim ``job`` and load it (on a loader thread: the claim's database round trips stay
    off the tracking thread): the loaded job, seconds, the pid of the process that decoded
    it, and when the claim and the load ran (wall clock); `_SKIPPED` if another run holds
    it. ``here``: decode on this thread, not in a decoding process."""
    claimed = time.time()
    if not work.claim(job):
        return _SKIPPED
    _loader.decoded_by = None
    _loader.here = here
    loaded, seconds, span = _clocked(work.load, job)
    times = {"claim": (claimed, span[0]), "load": span}
    return loaded, seconds, getattr(_loader, "decoded_by", None) or os.getpid(), times


_loader = threading.local()  # a loader thread's decoding processes (`read_clip_offloaded`)
#: Seconds a load waits for the decoding processes to start before it decodes on its thread.
DECODERS_START_S = 5.0


class _Decoders:
    """`run_local`'s decoding processes: light (PyAV and NumPy, no FiftyOne, no model), one
    per loader thread, whose decoded frames come back in shared memory."""

    def __init__(self) -> None:
        self.pool: ProcessPoolExecutor | None = None
        self.started: list[Future] = []
        self.broken = False

    def start(self, processes: int) -> None:
        self.pool, self.started = _process_pool(processes, None)

    def up(self, wait: float = 0.0) -> bool:
        """Whether a decoding process is ready, waiting up to ``wait`` seconds for one."""
        if self.broken or self.pool is None:
            return False
        if wait > 0 and not any(f.done() for f in self.started):
            concurrent.futures.wait(self.started, wait, concurrent.futures.FIRST_COMPLETED)
        return any(f.done() for f in self.started)

    def close(self) -> None:
        if self.pool is not None:
            _shut_down_behind(self.pool, cancel_futures=True)


def _loader_started(decoders: _Decoders | None) -> None:
    _lower_priority()
    _loader.decoders = decoders


def read_clip_offloaded(path: str | os.PathLike, **kwargs: Any) -> Clip:
    """`pointtrack.video.read_clip`, run in a decoding process of `run_local` when called on
    one of its loader threads that has them (else here). A thread decoding in the tracking
    process holds its GIL between frames, and every time the tracking thread gives the GIL
    up (waiting for the GPU, copying) it waits for its turn again: three decoding threads
    made a loop of offline CoTracker3 calls 5x slower on an H200, three decoding processes
    6% (`benchmarks/NOTES.md`, session 7)."""
    decoders: _Decoders | None = getattr(_loader, "decoders", None)
    # While the processes start (~0.3 s), a load waits for them rather than decode on this
    # thread beside the tracker: two such decodes made a run's first track take 0.6-0.8 s
    # instead of 0.33 s on an H200 host. The first videos, decoded before anything else
    # runs, are the exception (``here``).
    if (decoders is not None and not getattr(_loader, "here", False)
            and decoders.up(wait=DECODERS_START_S)):
        try:
            shared = decoders.pool.submit(_read_shared, os.fspath(path), kwargs).result()
        except BrokenProcessPool:  # a decoding process died: decode here from now on
            decoders.broken = True
        else:
            _loader.decoded_by = shared.pid
            return shared.clip()
    return read_clip(path, **kwargs)


def _read_shared(path: str, kwargs: dict) -> _SharedClip:
    """In a decoding process: the clip, in shared memory when ``/dev/shm`` has room for it
    twice over (containers often give it 64 MB, and a block past its end is a crash on first
    touch, not an error), else through the pipe as `_SharedClip` holding the frames."""
    clip = read_clip(path, **kwargs)
    try:
        room = os.statvfs("/dev/shm")
        free = room.f_bavail * room.f_frsize
    except OSError:
        free = 0
    if free >= 2 * clip.frames.nbytes:
        return _SharedClip.of(clip)
    return _SharedClip.holding(clip)


@dataclass
class _SharedClip:
    """A `Clip` whose frames wait in a POSIX shared-memory block made by a decoding process
    (a pipe would copy and unpickle ~70 MB per 480p clip, holding the GIL)."""

    name: str
    shape: tuple
    dtype: str
    frame_numbers: np.ndarray
    fps: float
    source_size: tuple[int, int]
    path: str | None
    pid: int
    frames: np.ndarray | None = None  # the frames themselves, when shared memory had no room

    @classmethod
    def holding(cls, clip: Clip) -> _SharedClip:
        return cls("", clip.frames.shape, clip.frames.dtype.str, clip.frame_numbers, clip.fps,
                   clip.source_size, clip.path, os.getpid(), clip.frames)

    @classmethod
    def of(cls, clip: Clip) -> _SharedClip:
        from multiprocessing.shared_memory import SharedMemory

        frames = np.ascontiguousarray(clip.frames)
        # Registered with the run's resource tracker (spawned processes share it): should
        # the run die before it takes the block, the tracker removes it.
        block = SharedMemory(create=True, size=max(frames.nbytes, 1))
        try:
            np.ndarray(frames.shape, frames.dtype, buffer=block.buf)[...] = frames
        finally:
            block.close()
        return cls(block.name, frames.shape, frames.dtype.str, clip.frame_numbers, clip.fps,
                   clip.source_size, clip.path, os.getpid())

    def clip(self) -> Clip:
        """The clip, its frames mapped here (not copied). The block's name goes at once, so
        its memory goes with the last reference to the frames."""
        from multiprocessing import resource_tracker

        if self.frames is not None:
            return Clip(self.frames, self.frame_numbers, self.fps, self.source_size, self.path)

        name = self.name.lstrip("/")
        path = f"/dev/shm/{name}"
        fd = os.open(path, os.O_RDWR)
        try:
            # Pages faulted in now, on the loader thread (the call releases the GIL), not one
            # by one when the tracker first reads the frames: 5-35 ms per 480p clip on a VM.
            populate = getattr(mmap, "MAP_POPULATE", 0)
            mapped = mmap.mmap(fd, os.fstat(fd).st_size, flags=mmap.MAP_SHARED | populate)
        finally:
            os.close(fd)
            os.unlink(path)
            resource_tracker.unregister(f"/{name}", "shared_memory")
        frames = np.frombuffer(mapped, np.dtype(self.dtype), count=math.prod(self.shape))
        return Clip(frames.reshape(self.shape), self.frame_numbers, self.fps, self.source_size,
                    self.path)


def run_local(
    jobs: Iterable[Job],
    work: Work,
    tracker: Tracker | Sequence[Tracker],
    *,
    loaders: int = 2,
    prefetch: int = 2,
    store_processes: int | None = None,
    loader_processes: bool | None = None,
    processes: int = 1,
    keep_processes: bool = False,
    on_outcome: OnOutcome | None = None,
) -> list[Outcome]:
    """The three stages at once: ``loaders`` decode ahead of the tracker, at most
    ``loaders + prefetch`` loaded videos wait in memory; this thread tracks; stores run
    behind on a thread (``store_processes=0``) or in that many spawned processes (default:
    `default_store_processes`), with at most eight per store worker waiting; the run's last
    videos, which nothing is left to overlap, are stored in parts by all the store processes
    at once where ``work`` is a `PartedStore`. Results are identical to `run_sequential`;
    jobs are taken in `run_order`.

    Loaders are threads (claims, prompts); with ``loader_processes`` (default:
    `default_loader_processes`) each has a spawned process that decodes for it
    (`read_clip_offloaded`). While those start, and should one die, the threads decode.

    ``processes > 1`` adds ``processes - 1`` tracking processes (`pointtrack.runners.processes`),
    each with a copy of the tracker and a pipeline of its own, sharing the jobs with this one
    and the default store processes between them: one process's CPU work (kernel launches,
    host copies) overlaps another's GPU work. ``keep_processes`` keeps them, models loaded and
    compiled, for the next run with this tracker (`processes.release_processes` ends them).

    ``tracker`` may also be several engines (copies of one model): each tracks on a thread of
    its own in this process.
    """
    trackers = list(tracker) if isinstance(tracker, list | tuple) else [tracker]
    jobs = run_order(jobs)
    run = _Run(work, on_outcome)
    if store_processes is None:
        store_processes = default_store_processes(trackers[0])
        if processes > 1 and store_processes:
            store_processes = max(1, store_processes // processes)
    if loader_processes is None:
        loader_processes = default_loader_processes(trackers[0])
    options = {"loaders": loaders, "prefetch": prefetch, "store_processes": store_processes,
               "loader_processes": bool(loader_processes)}
    if processes <= 1:
        _pipeline(iter(jobs), work, trackers, run, **options)
        return run.outcomes

    from .processes import tracker_processes

    others = tracker_processes(trackers[0], processes - 1, keep_processes)
    try:
        def own(todo: Iterator[Job], report: OnOutcome) -> None:
            _pipeline(todo, work, trackers, _Run(work, report), **options)

        lost = others.run(jobs, work, own, options, run.report)
    finally:
        if not keep_processes:
            others.close()
    if lost:  # held by a process that died: its claims are this run's, so they are ours
        _pipeline(iter(lost), work, trackers, run, **options)
    return run.outcomes


def _pipeline(
    todo: Iterator[Job],
    work: Work,
    trackers: list[Tracker],
    run: _Run,
    *,
    loaders: int,
    prefetch: int,
    store_processes: int,
    loader_processes: bool = False,
) -> None:
    """`run_local` in this process: ``todo``'s jobs through the loaders, ``trackers`` (one
    thread each) and the store pool, outcomes to ``run``."""
    # Results are small next to decoded clips; room for many keeps the tracker going while
    # the store processes start.
    waiting_stores = 8 * max(store_processes, 1)
    lock = threading.Lock()  # guards the queues, the claims and the outcome bookkeeping
    aborted: list[BaseException] = []
    pid = os.getpid()
    with contextlib.ExitStack() as pools:
        decoders = _Decoders() if loader_processes else None
        if decoders is not None:
            pools.callback(decoders.close)
        load_pool = pools.enter_context(ThreadPoolExecutor(
            loaders, thread_name_prefix="pointtrack-load", initializer=_loader_started,
            initargs=(decoders,)))
        loads: deque[tuple[Job, Future]] = deque()
        # job, seconds, store, times, loader
        stores: deque[tuple[Job, dict, Future, dict, int]] = deque()

        listed_all: list[bool] = []  # every job has been handed to a loader

        def load_next(here: bool = False) -> None:
            job = next(todo, None)
            if job is None:
                listed_all.append(True)
            else:
                loads.append((job, load_pool.submit(_claimed_load, work, job, here)))

        def next_loaded() -> tuple[Job, Future] | None:
            """The first load that has finished, else the first to finish: a slow decode
            (a long video) holds back only its own job."""
            while True:
                with lock:
                    if not loads or aborted:
                        return None
                    for i, (job, future) in enumerate(loads):
                        if future.done():
                            del loads[i]
                            return job, future
                    pending = [future for _, future in loads]
                concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)

        def finish_store(job: Job, seconds: dict, future: Future, times: dict,
                         loader: int) -> None:
            try:
                seconds["store"] = future.result()
            except Exception as e:  # noqa: BLE001
                with lock:
                    run.failed(job, e, pid)
                return
            with lock:
                run.done(job, seconds, pid, times, loader)

        def finish_stores(keep: int) -> None:
            while True:
                with lock:
                    if not stores or (len(stores) <= keep and not stores[0][2].done()):
                        return
                    item = stores.popleft()
                finish_store(*item)

        def track_all(tracker: Tracker) -> None:
            try:
                if decoders is not None:  # see `head` below
                    concurrent.futures.wait(head_loads)
                while (item := next_loaded()) is not None:
                    job, future = item
                    try:
                        claimed = future.result()
                    except Exception as e:  # noqa: BLE001 -- the claim or the decoding
                        claimed = e
                    with lock:
                        # Decoding the next jobs overlaps this tracking (after the first
                        # decode, this fills the queue).
                        for _ in range(queued - len(loads)):
                            load_next()
                        if claimed is _SKIPPED:
                            run.skipped(job)
                            continue
                        if isinstance(claimed, Exception):
                            run.failed(job, claimed, pid)
                            continue
                    loaded, t_load, loader, times = claimed
                    try:
                        result, t_track, span = _clocked(work.track, tracker, job, loaded)
                    except Exception as e:  # noqa: BLE001
                        with lock:
                            run.failed(job, e, pid)
                        continue
                    finally:
                        del loaded
                    with lock:
                        last = bool(listed_all) and not loads  # the run's last videos
                    if last and parted:
                        stored = _stored_in_parts(work, job, result, store_pool,
                                                  store_processes)
                    else:
                        stored = store_pool.submit(_stored, work, job, result)
                    del result
                    with lock:
                        stores.append((job, {"load": t_load, "track": t_track}, stored,
                                       {**times, "track": span}, loader))
                    finish_stores(waiting_stores)
            except BaseException as e:  # noqa: BLE001 -- RunAborted: every thread stops
                with lock:
                    aborted.append(e)

        # The first videos decode in this process before anything is tracked, one per
        # tracker: the GPU waits for them. With every loader decoding at once, the first
        # track started ~0.6 s after the jobs were listed on an H200 host, ~0.36 s with the
        # first decode alone (`benchmarks/NOTES.md`, session 8). The helper processes are
        # spawned meanwhile. Decoding processes take ~0.5 s to start and ~0.35 s to decode a
        # video, longer than the first (shortest) video takes to track: the GPU then sat idle
        # for 0.54 s (session 10). So with them, one more video (in `run_order`, the
        # longest) decodes here too, and tracking starts once both are decoded, not beside
        # the second decode (a decode thread slows the tracking thread: session 7). Idle
        # before and between tracks: 0.85 -> 0.63 s (session 11). The first tracker to get
        # its video queues the rest.
        queued = loaders + prefetch + len(trackers) - 1  # loads waiting, once under way
        parted = store_processes > 1 and all(
            callable(getattr(work, step, None)) for step in ("store_begin", "store_part",
                                                             "store_end"))
        head = len(trackers) + (decoders is not None)
        with lock:
            for _ in range(head):
                load_next(here=True)
            head_loads = [future for _, future in loads]
        if decoders is not None:
            decoders.start(loaders)
        store_pool = pools.enter_context(
            _stores_ended(_store_pool(store_processes, work), aborted))
        others = [threading.Thread(target=track_all, args=(t,), name="pointtrack-track")
                  for t in trackers[1:]]
        for thread in others:
            thread.start()
        track_all(trackers[0])
        for thread in others:
            thread.join()
        if not aborted:
            finish_stores(0)
            logger.debug("pipeline: every store done")
    logger.debug("pipeline: pools closed")
    if aborted:
        raise aborted[0]


__all__ = [
    "Job",
    "OnOutcome",
    "Outcome",
    "PartedStore",
    "RunAborted",
    "Work",
    "default_loader_processes",
    "default_store_processes",
    "error_message",
    "read_clip_offloaded",
    "run_local",
    "run_order",
    "run_sequential",
]
