"""The Ray runner: tracker actors (one per GPU), decoding and storing as CPU tasks.

Needs ``pip install 'pointtrack[ray]'``. On a cluster every node needs pointtrack, the media at
the same paths (shared storage) and a database all of them reach (``FIFTYONE_DATABASE_URI``);
a cluster this runner starts gets the driver's FiftyOne database settings and its
``POINTTRACK_*`` settings (``POINTTRACK_MEMORY_LIMIT``, ``POINTTRACK_CHECKPOINT_DIR``, ...).

Per job: a CPU task decodes it (`Work.load`), the least busy actor tracks it once it is
decoded (each actor holds one loaded, compiled model and keeps ``1 + prefetch`` decoded jobs
queued, so it never waits for a decode), and a CPU task stores the result (`Work.store`).
Results move between them in Ray's object store, not through the driver. A killed actor is
restarted and its queued jobs are retried (Ray's ``max_restarts`` / ``max_task_retries``); a
store replaces whatever an interrupted attempt wrote, so a redone job is stored once.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from ..trackers.base import Tracker
from . import (
    Job,
    OnOutcome,
    Outcome,
    RunAborted,
    Work,
    _clocked,
    _lower_priority,
    _Run,
    error_message,
    run_order,
)
from .processes import build_tracker, tracker_spec

logger = logging.getLogger(__name__)

#: FiftyOne settings the workers need to reach the driver's database.
_DB_ENV = (
    "FIFTYONE_DATABASE_URI",
    "FIFTYONE_DATABASE_NAME",
    "FIFTYONE_PRIVATE_DATABASE_PORT",
    "FIFTYONE_DEFAULT_DATASET_DIR",
    "FIFTYONE_DO_NOT_TRACK",
)
#: Prefix of pointtrack's own settings, which the workers get as the driver has them.
_POINTTRACK_ENV = "POINTTRACK_"
MAX_RESTARTS = 3
#: Seconds without a finished task after which the run logs what it is waiting for.
STALL_S = 120


class RayUnavailable(RuntimeError):
    """Ray is not installed."""


def import_ray():
    try:
        import ray
    except ImportError as e:
        raise RayUnavailable(
            "the Ray backend needs Ray: pip install 'pointtrack[ray]'"
        ) from e
    return ray


def worker_env() -> dict[str, str]:
    """Environment variables a cluster started here hands its workers."""
    return {k: v for k, v in os.environ.items()
            if k in _DB_ENV or k.startswith(_POINTTRACK_ENV)}


def _load(work: Work, job: Job) -> tuple[Any, float, int, tuple[float, float]]:
    """The loaded job, seconds, this worker's pid, and when it ran (wall clock: the time
    from the job's submission to its start is Ray's, e.g. a worker starting)."""
    _lower_priority()  # as the local runner's loaders: the tracker actor's launches come first
    value, seconds, span = _clocked(work.load, job)
    return value, seconds, os.getpid(), span


def _store(work: Work, job: Job, result: Any) -> tuple[float, tuple[float, float]]:
    _lower_priority()
    _, seconds, span = _clocked(work.store, job, result)
    return seconds, span


class _Arrivals:
    """Counts the warm-up tasks that have started (`_warm_workers`)."""

    def __init__(self) -> None:
        self.count = 0

    def arrive(self) -> int:
        self.count += 1
        return self.count

    def arrived(self) -> int:
        return self.count


def _warm(work: Work, arrivals: Any, expected: int, deadline: float) -> int:
    """A warm-up task: unpickling ``work`` imports what loads and stores need; it then holds
    its worker until ``expected`` such tasks run at once (or ``deadline``), so that each has
    a worker of its own."""
    import ray

    ray.get(arrivals.arrive.remote())
    while ray.get(arrivals.arrived.remote()) < expected and time.time() < deadline:
        time.sleep(0.02)
    return os.getpid()


#: Workers warmed per cluster and job: (GCS address, job id) -> count.
_warmed: dict[tuple, int] = {}
#: Seconds the warm-up waits for the workers to start, at most.
WARM_S = 30.0


def _warm_workers(ray, work_ref: Any, count: int) -> set[int]:
    """Make sure ``count`` Ray workers of this job have imported what a load or a store
    needs, before the run submits any (their pids; none if this process did so before).
    Ray starts a worker when a task finds none idle, and one that must import FiftyOne and
    PyTorch to unpickle the work took 6-9 s on a busy H200 host: loads queued behind such
    starts left the tracker actor idle. Best effort: after `WARM_S` the run goes on."""
    context = ray.get_runtime_context()
    key = (context.gcs_address, context.get_job_id())
    if _warmed.get(key, 0) >= count:
        return set()
    arrivals = ray.remote(num_cpus=0)(_Arrivals).remote()
    warm = ray.remote(num_cpus=1, max_retries=0)(_warm)
    deadline = time.time() + WARM_S
    pids = ray.get([warm.remote(work_ref, arrivals, count, deadline) for _ in range(count)])
    ray.kill(arrivals)
    _warmed[key] = count
    logger.debug("ray: %d workers warm (%d processes)", count, len(set(pids)))
    return set(pids)


class _TrackerActor:
    """Holds one loaded tracker; runs `Work.track` for any run that sends it jobs."""

    def __init__(self, spec: Any) -> None:
        try:
            self.tracker = build_tracker(spec)
            self.error = None
        except Exception as e:  # noqa: BLE001 -- reported by the first call, which aborts
            self.error = error_message(e)

    def track(self, work: Work, job: Job, loaded: tuple) -> tuple[Any, dict]:
        if self.error is not None:  # no job could be tracked: stop the run
            raise RunAborted(f"the tracker could not be built on a Ray worker: {self.error}")
        value, t_load, loader, load_times = loaded
        result, t_track, span = _clocked(work.track, self.tracker, job, value)
        meta = {"seconds": {"load": t_load, "track": t_track}, "worker": os.getpid(),
                "loader": loader, "times": {"load": load_times, "track": span}}
        return result, meta


#: Actors kept by ``keep_actors=True``, with the spec they were built from (which must stay
#: in the object store for Ray to restart them): (id(tracker), gpus, count) -> (spec, actors).
_kept: dict[tuple, tuple[Any, list]] = {}


def release_actors() -> None:
    """End the actors that ``keep_actors=True`` kept (they hold GPUs and CPUs until then)."""
    ray = import_ray()
    while _kept:
        _, (_, actors) = _kept.popitem()
        for actor in actors:
            ray.kill(actor)


def _actors(ray, tracker: Tracker, num_actors: int, num_gpus: float, keep: bool) -> tuple:
    """(spec ref, actors): the caller holds the spec while the actors may need a restart."""
    context = ray.get_runtime_context()  # a new cluster may reuse a job id, not its address
    key = (id(tracker), num_gpus, num_actors, context.gcs_address, context.get_job_id())
    if key in _kept:
        return _kept[key]
    actor_class = ray.remote(num_cpus=1, num_gpus=num_gpus, max_restarts=MAX_RESTARTS,
                             max_task_retries=MAX_RESTARTS)(_TrackerActor)
    spec = ray.put(tracker_spec(tracker))
    actors = [actor_class.remote(spec) for _ in range(num_actors)]
    if keep:
        _kept[key] = (spec, actors)
    return spec, actors


def _cause(e: BaseException) -> BaseException:
    """The exception a Ray task raised, out of Ray's wrapper."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e


def run_ray(
    jobs: Iterable[Job],
    work: Work,
    tracker: Tracker,
    *,
    address: str | None = None,
    num_actors: int | None = None,
    num_gpus: float | None = None,
    prefetch: int = 2,
    max_stores: int | None = None,
    keep_actors: bool = False,
    on_outcome: OnOutcome | None = None,
) -> list[Outcome]:
    """Run ``jobs`` on a Ray cluster: at ``address`` (``"auto"``: the one ``ray start``
    started on this node), the one this process already joined, or a new local one.

    Args:
        num_actors: tracker actors; default one per GPU of the cluster, else half its CPUs.
        num_gpus: GPUs per actor; default 1 where the cluster has GPUs, else 0.
        prefetch: jobs queued on each actor beyond the one it tracks.
        max_stores: store tasks at once (default 4 per actor); later results wait, as
            references, until one ends, rather than holding Ray's CPU slots and workers
            (which the decodes need) while they queue for the database.
        keep_actors: keep the actors (their models loaded and compiled) for the next run
            with this tracker, instead of ending them; `release_actors` ends them.
    """
    ray = import_ray()
    from ray.exceptions import RayActorError, RayTaskError

    if not ray.is_initialized():
        ray.init(
            address=address,
            runtime_env={"env_vars": worker_env()},
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if num_gpus is None:
        num_gpus = 1 if gpus else 0
    if num_actors is None:
        num_actors = max(1, int(gpus // num_gpus) if num_gpus else int(resources["CPU"]) // 2)
    # Ray would wait for ever for resources the cluster does not have.
    if num_gpus * num_actors > gpus:
        raise ValueError(f"{num_actors} actors x {num_gpus} GPUs: the Ray cluster has {gpus}")
    if num_actors + 1 > resources.get("CPU", 0):
        raise ValueError(f"{num_actors} actors need {num_actors + 1} CPUs (one each, one to "
                         f"decode and store): the Ray cluster has {resources.get('CPU', 0):g}")

    load = ray.remote(num_cpus=1)(_load)
    store = ray.remote(num_cpus=1)(_store)
    # The spec must outlive the run: a killed actor is rebuilt from it.
    spec, actors = _actors(ray, tracker, num_actors, num_gpus, keep_actors)
    work_ref = ray.put(work)
    # Decoded ahead, at most `decoding` jobs decoding or decoded and not yet with an actor.
    decoding = num_actors * (1 + prefetch)
    max_stores = max_stores or 4 * num_actors
    # As many as can run at once beside the actors (other jobs may hold CPUs too).
    free_cpus = min(int(resources.get("CPU", 0)) - num_actors,
                    int(ray.available_resources().get("CPU", 0)))
    _warm_workers(ray, work_ref, max(1, min(decoding + max_stores, free_cpus)))

    run = _Run(work, on_outcome)
    todo = deque(run_order(jobs))
    loading: dict[Any, tuple[Job, float]] = {}  # load ref -> job, when submitted
    loaded: deque[tuple[Job, Any, float]] = deque()  # decoded: job, load ref, when submitted
    queued = [0] * num_actors  # jobs each actor holds
    # meta ref -> job, actor, result ref, when submitted
    tracking: dict[Any, tuple[Job, int, Any, float]] = {}
    storing: dict[Any, tuple[Job, dict]] = {}  # store ref -> job, meta
    waiting: deque[tuple[Job, Any, dict]] = deque()  # tracked, for a store slot: job, result, meta

    def store_next(job: Job, result: Any, meta: dict) -> None:
        if len(storing) < max_stores:
            storing[store.remote(work_ref, job, result)] = (job, meta)
        else:
            waiting.append((job, result, meta))

    def submit() -> None:
        while todo and len(loading) + len(loaded) < decoding:
            job = todo.popleft()
            if not work.claim(job):
                run.skipped(job)
                continue
            loading[load.remote(work_ref, job)] = (job, time.time())
        # Actors get decoded jobs only. An actor runs its calls in order, each once its
        # input exists, so one slow decode queued on it (a Ray worker starting, say) held
        # back every job behind it: 6-10 s with the GPU idle, once per run on an H200 host.
        for i, actor in sorted(enumerate(actors), key=lambda ia: queued[ia[0]]):
            while queued[i] < 1 + prefetch and loaded:
                job, loaded_ref, submitted = loaded.popleft()
                result, meta = actor.track.options(num_returns=2).remote(
                    work_ref, job, loaded_ref)
                tracking[meta] = (job, i, result, submitted)
                queued[i] += 1

    try:
        submit()
        while loading or loaded or tracking or storing:
            ready, _ = ray.wait([*loading, *tracking, *storing], num_returns=1,
                                timeout=STALL_S)
            if not ready:  # say what is pending: a stalled cluster otherwise shows nothing
                logger.warning(
                    "no Ray task finished in %g s: %d video(s) decoding, %d tracking or "
                    "queued on %d actor(s), %d store(s) pending; free resources %s", STALL_S,
                    len(loading), len(tracking), len(actors), len(storing) + len(waiting),
                    ray.available_resources())
                continue
            ref = ready[0]
            if ref in loading:  # decoded, or failed: the actor's call reports which
                job, submitted = loading.pop(ref)
                loaded.append((job, ref, submitted))
                submit()
            elif ref in tracking:
                job, i, result, submitted = tracking.pop(ref)
                queued[i] -= 1
                try:
                    meta = ray.get(ref)
                except (RayTaskError, RayActorError) as e:
                    cause = _cause(e)
                    if isinstance(cause, RunAborted):
                        raise cause from None
                    if isinstance(e, RayActorError):
                        cause = RuntimeError(f"tracker worker lost {MAX_RESTARTS + 1} times "
                                             f"({error_message(e).splitlines()[0]})")
                    run.failed(job, cause)
                else:
                    meta["times"]["submitted"] = (submitted, submitted)
                    store_next(job, result, meta)
                submit()
            else:
                job, meta = storing.pop(ref)
                if waiting:
                    store_next(*waiting.popleft())
                try:
                    meta["seconds"]["store"], meta["times"]["store"] = ray.get(ref)
                except RayTaskError as e:
                    cause = _cause(e)
                    if isinstance(cause, RunAborted):
                        raise cause from None
                    run.failed(job, cause, meta["worker"])
                    continue
                run.done(job, meta["seconds"], meta["worker"], meta["times"], meta["loader"])
    finally:
        if not keep_actors:
            for actor in actors:
                ray.kill(actor)
        del spec
    return run.outcomes
