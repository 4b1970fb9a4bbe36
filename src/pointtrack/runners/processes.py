"""Tracking processes: copies of one tracker, each in a process of its own, beside the caller.

Tracking a video is not all GPU work: the Python that launches kernels, the host copies before
and after, and the per-video set-up keep one process's CPU busy while the GPU waits. A second
process with its own copy of the model fills those gaps, with no GIL shared; the GPU runs
whichever process's kernels are ready. `run_local(processes=N)` runs ``N - 1`` of these beside
its own tracking thread, each with a local pipeline of its own (loaders, stores), all taking
jobs from one queue.

Semantics are the local runner's: each job is claimed once (the claims are the run's, whatever
process takes them), a failed job is recorded and the run goes on, and a job that a process
was holding when it died is redone by the caller's process (its store replaces whatever the
lost attempt wrote).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import multiprocessing
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

from ..trackers import load_tracker
from ..trackers.base import Tracker
from . import Job, OnOutcome, Outcome, RunAborted, Work, _script_not_rerun, error_message

logger = logging.getLogger(__name__)


def tracker_spec(tracker: Tracker) -> Any:
    """What another process rebuilds ``tracker`` from: (name, options) for a registered engine,
    so no model is pickled (a checkpoint must be a path the process can read); else the
    tracker object itself."""
    from ..trackers import _REGISTRY

    if _REGISTRY.get(tracker.name) is type(tracker):
        options = dict(tracker.options)
        if options.get("checkpoint") == "<state dict>":
            # Engines forget an in-memory state dict once its weights are in the model.
            if getattr(tracker, "checkpoint", None) is None:
                raise ValueError(
                    "this tracker was built from an in-memory state dict that is now inside "
                    "its model: give other processes a checkpoint path (saved with torch.save)"
                )
            options["checkpoint"] = tracker.checkpoint
        return (tracker.name, options)
    return tracker


def build_tracker(spec: Any) -> Tracker:
    """The tracker of a `tracker_spec`."""
    if isinstance(spec, tuple):
        name, options = spec
        return load_tracker(name, **options)
    return spec


class _Link:
    """A tracking process's end of its pipe to the caller. Threads of its pipeline share it
    (a lock keeps their messages whole). One pipe per process, not a shared queue: a process
    killed while it holds a shared queue's lock would stall every other process."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, message: tuple) -> None:
        with self.lock:
            self.conn.send(message)

    def jobs(self, run: int) -> Iterator[Job]:
        """Run ``run``'s jobs, one at a time as the pipeline asks, until the caller has none."""
        while True:
            with self.lock:
                self.conn.send(("want", run))
                job = self.conn.recv()
            if job is None:
                return
            yield job


def _serve(spec: Any, conn: Connection) -> None:
    """A tracking process: build the tracker, then run a local pipeline for each run the
    caller announces, taking jobs from it and reporting outcomes to it."""
    from . import _pipeline, _Run

    link = _Link(conn)
    try:
        tracker = build_tracker(spec)
    except Exception as e:  # noqa: BLE001 -- reported; the runs go on without this process
        link.send(("broken", error_message(e)))
        return
    try:
        while (message := conn.recv()) is not None:
            run, work, options = message
            if hasattr(work, "memory_check"):
                # The caller's check stays with the caller (it holds that tracker): use ours.
                work.memory_check = tracker.check_memory
            error = None
            try:
                # The pipeline itself, not `run_local`: the caller has put the jobs in
                # `run_order` already, and ordering them here would take every job the
                # caller has left at once (the feed is shared with the other pipelines).
                report = _Run(work, lambda o, run=run: link.send(("outcome", run, o)))
                _pipeline(link.jobs(run), work, [tracker], report, **options)
            except BaseException as e:  # noqa: BLE001 -- RunAborted: the caller stops the run
                error = error_message(e)
            link.send(("end", run, error))
    except (EOFError, OSError, KeyboardInterrupt):
        pass  # the caller is gone (or Ctrl-C reached the whole process group): just end


class TrackerProcesses:
    """``count`` processes, each holding a copy of the tracker that ``spec`` names (built once,
    compiled on its first video), serving runs one after another (`run`)."""

    def __init__(self, spec: Any, count: int) -> None:
        context = multiprocessing.get_context("spawn")  # the caller holds CUDA and sockets
        self.conns: list[Connection] = []
        self.procs = []
        for _ in range(count):
            mine, theirs = context.Pipe()
            # Not a daemon: it runs a local pipeline, whose store processes are its children.
            proc = context.Process(target=_serve, args=(spec, theirs), name="pointtrack-tracker")
            # A registered engine's spec needs nothing from the caller's script: do not let
            # spawn re-run it (an unguarded script would start its run again). A tracker
            # object may be of a class that only the script defines: then it must be guarded.
            with _script_not_rerun() if isinstance(spec, tuple) else contextlib.nullcontext():
                proc.start()
            theirs.close()
            self.conns.append(mine)
            self.procs.append(proc)
        self._runs = itertools.count(1)

    def run(
        self,
        jobs: Iterable[Job],
        work: Work,
        own: Callable[[Iterator[Job], OnOutcome], None],
        options: dict,
        report: OnOutcome,
    ) -> list[Job]:
        """Share ``jobs`` between these processes and ``own`` (the caller's pipeline, given an
        iterator of jobs and where to report); outcomes go to ``report``, from one thread at a
        time. Returns the jobs a process held when it died, for the caller to redo."""
        run = next(self._runs)
        todo = deque(jobs)
        lock = threading.Lock()  # guards todo, the bookkeeping below and report
        given: dict[int, list[Job]] = {}  # jobs handed to each process, not yet reported
        lost: list[Job] = []
        active: dict[Connection, int] = {}
        for i, (conn, proc) in enumerate(zip(self.conns, self.procs, strict=True)):
            if proc.is_alive():
                try:
                    conn.send((run, work, options))
                except OSError:
                    continue
                active[conn] = i
                given[i] = []
        errors: list[str] = []
        stopping: list[bool] = []  # the caller's pipeline raised: hand out no more jobs

        def next_job() -> Job | None:
            with lock:
                return todo.popleft() if todo and not errors and not stopping else None

        def ours() -> Iterator[Job]:
            while (job := next_job()) is not None:
                yield job

        def mine(outcome: Outcome) -> None:
            with lock:
                report(outcome)

        def serve() -> None:
            while active:
                for conn in wait(list(active), timeout=0.5):
                    i = active[conn]
                    try:
                        message = conn.recv()
                    except (EOFError, OSError):  # died: what it held is lost
                        del active[conn]
                        with lock:
                            lost.extend(given.pop(i))
                        continue
                    kind = message[0]
                    if kind == "want" and message[1] == run:
                        job = next_job()
                        if job is not None:
                            with lock:
                                given[i].append(job)
                        try:
                            conn.send(job)
                        except OSError:  # died meanwhile
                            del active[conn]
                            with lock:
                                lost.extend(given.pop(i))
                    elif kind == "outcome" and message[1] == run:
                        outcome = message[2]
                        with lock:
                            given[i] = [j for j in given[i] if j.key != outcome.job.key]
                            report(outcome)
                    elif kind == "end" and message[1] == run:
                        del active[conn]
                        if message[2] is not None:
                            with lock:
                                errors.append(message[2])
                    elif kind == "broken":
                        del active[conn]
                        logger.warning("a tracking process could not build its tracker: %s",
                                       message[1])

        server = threading.Thread(target=serve, name="pointtrack-processes", daemon=True)
        server.start()
        try:
            own(ours(), mine)
        except BaseException:
            stopping.append(True)
            raise
        finally:
            server.join()  # the processes finish the jobs they hold
        if errors:
            raise RunAborted(errors[0])
        if lost:
            logger.warning("%d job(s) were held by a tracking process that died: redoing them",
                           len(lost))
        return lost

    def close(self) -> None:
        for conn, proc in zip(self.conns, self.procs, strict=True):
            if proc.is_alive():
                try:
                    conn.send(None)
                except OSError:
                    pass
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns:
            conn.close()


#: Processes kept by ``keep_processes=True``: (id(tracker), count) -> processes.
_kept: dict[tuple, TrackerProcesses] = {}


def release_processes() -> None:
    """End the processes that ``keep_processes=True`` kept (each holds a model in memory)."""
    while _kept:
        _kept.popitem()[1].close()


atexit.register(release_processes)  # kept processes wait for runs; the interpreter would wait


def tracker_processes(tracker: Tracker, count: int, keep: bool) -> TrackerProcesses:
    key = (id(tracker), count)
    procs = _kept.get(key)
    if procs is not None and not all(p.is_alive() for p in procs.procs):
        procs.close()  # one died: start afresh
        procs = None
    if procs is None:
        procs = TrackerProcesses(tracker_spec(tracker), count)
        if keep:
            _kept[key] = procs
    return procs


__all__ = ["TrackerProcesses", "build_tracker", "release_processes", "tracker_spec"]
