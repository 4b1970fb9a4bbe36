"""Runners over real datasets (real videos, the test run's MongoDB): pipelined, Ray, claims.

Every runner must store exactly what the sequential runner stores: the same tracks bit for
bit (lk is deterministic), the same per-frame keypoints, the same error on a broken video.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fiftyone import ViewField as F
from test_fiftyone import H, T, textured_video

import pointtrack.fiftyone as ptf
from pointtrack.cli import main
from pointtrack.trackers import load_tracker
from pointtrack.trackers.lk import LucasKanadeTracker

NUM_VIDEOS = 6


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("runner-videos")
    for i in range(NUM_VIDEOS):
        textured_video(d / f"clip{i}.mp4", seed=100 + i, num_frames=T + i)
    good = (d / "clip0.mp4").read_bytes()
    (d / "broken.mp4").write_bytes(good[: len(good) // 3])  # truncated: no moov atom
    return d


@pytest.fixture
def dataset(video_dir):
    ds = ptf.create_dataset(video_dir, f"pt-{uuid.uuid4().hex[:8]}")
    yield ds
    ds.delete()


def frame_labels(ds, field: str) -> dict:
    """Per sample: per frame, the (index, x, y, confidence) of every keypoint."""
    out = {}
    for sample in ds.select_fields(f"frames.{field}"):
        out[sample.filepath] = {
            fn: [(k.index, *k.points[0], (k.confidence or [None])[0]) for k in f[field].keypoints]
            for fn, f in sample.frames.items() if f[field] is not None
        }
    return out


def assert_same_run(ds, field: str, reference: str, parity: bool = False) -> list[str]:
    """``field`` holds exactly what ``reference`` holds: tracks, labels and errors. With
    ``parity`` (CoTracker3 runs), positions may differ by the parity tolerance (0.01 px) and
    probabilities by 1e-3; visibility flags, track ids and frame numbers stay exact. Returns
    the tracker names of the samples compared."""
    ds.reload()
    trackers = []
    for sample in ds:
        ref_error, error = sample[ptf.error_field(reference)], sample[ptf.error_field(field)]
        assert error == ref_error
        if ref_error is not None:
            assert sample[ptf.result_field(field)] is None
            continue
        a = ptf.tracks_from_sample(sample, field)
        b = ptf.tracks_from_sample(sample, reference)
        if parity:
            assert a.tracker == b.tracker
            np.testing.assert_allclose(a.xy, b.xy, rtol=0, atol=1e-2)
            np.testing.assert_array_equal(a.visible, b.visible)
            np.testing.assert_array_equal(a.frame_numbers, b.frame_numbers)
        else:
            assert a.equals(b)
        trackers.append(a.tracker)
    labels, ref = frame_labels(ds, field), frame_labels(ds, reference)
    if parity:
        assert labels.keys() == ref.keys()
        for path in ref:
            assert labels[path].keys() == ref[path].keys()
            for fn in ref[path]:
                got, want = np.array(labels[path][fn], float), np.array(ref[path][fn], float)
                assert got.shape == want.shape
                np.testing.assert_array_equal(got[:, 0], want[:, 0])  # track ids
                # x, y are normalised by the frame size (W > H); confidence as in parity
                np.testing.assert_allclose(got[:, 1:3], want[:, 1:3], rtol=0, atol=1e-2 / H)
                np.testing.assert_allclose(got[:, 3], want[:, 3], rtol=0, atol=1e-3)
    else:
        assert labels == ref
    ids = ds.values(f"frames.{field}.keypoints.id", unwind=True)
    assert len(ids) == len(set(ids))  # no keypoint stored twice
    return trackers


def test_pipelined_matches_sequential(dataset, monkeypatch):
    from pointtrack.fiftyone.run import SampleWork

    lk = load_tracker("lk")
    seq = ptf.track_dataset(dataset, lk, "seq", grid_size=4, every=2, backend="sequential",
                            progress=False)
    assert len(seq.done) == NUM_VIDEOS and len(seq.failed) == 1
    assert "broken.mp4" in next(iter(seq.failed.values()))
    parted = []  # the stores that ended in this process: those split over the store processes
    end = SampleWork.store_end
    monkeypatch.setattr(SampleWork, "store_end",
                        lambda self, job, result: (parted.append(job.key), end(self, job, result)))
    # Stores in a spawned process, as on a GPU machine, on a thread, as on CPU, and in two
    # processes, which share the last video's store.
    for field, procs in (("pipe", 1), ("pipe_thread", 0), ("pipe_parts", 2)):
        outcomes = []
        parted.clear()
        summary = ptf.track_dataset(
            dataset, lk, field, grid_size=4, every=2, progress=False,
            runner_options={"store_processes": procs, "loaders": 2,
                            "loader_processes": False}, on_outcome=outcomes.append,
        )
        assert sorted(summary.done) == sorted(seq.done)
        assert summary.failed == seq.failed
        assert len(outcomes) == NUM_VIDEOS + 1
        assert all(set(o.seconds) == {"load", "track", "store"} for o in outcomes
                   if o.status == "done")
        for o in outcomes:  # when the claim, the load and the tracking ran, in that order
            if o.status == "done":
                t = o.times
                assert t["claim"][0] <= t["claim"][1] <= t["load"][0] <= t["load"][1]
                assert t["load"][1] <= t["track"][0] <= t["track"][1]
        last = max((o for o in outcomes if o.status == "done"), key=lambda o: o.times["track"])
        assert parted == ([last.job.key] if procs == 2 else [])
        assert_same_run(dataset, field, "seq")


@dataclass
class GatedWork:
    """A `Work` whose job "slow" decodes only once every other job has been tracked (a file
    per tracked job in ``gate``), or after 30 s."""

    gate: str

    def claim(self, job):
        return True

    def load(self, job):
        deadline = time.time() + 30
        while (job.key == "slow" and len(os.listdir(self.gate)) < 5
               and time.time() < deadline):
            time.sleep(0.05)
        return job.key

    def track(self, tracker, job, loaded):
        Path(self.gate, job.key).touch()
        return loaded

    def store(self, job, result):
        pass

    def fail(self, job, message):
        raise AssertionError(f"{job.key} failed: {message}")


def test_run_order_cheapest_first_then_costliest():
    from pointtrack.runners import Job, run_order

    jobs = [Job("a", "a", 5), Job("b", "b", None), Job("c", "c", 9), Job("d", "d", 2),
            Job("e", "e", 9), Job("f", "f", None)]
    assert [j.key for j in run_order(jobs)] == ["d", "b", "f", "c", "e", "a"]
    unknown = [Job("x", "x"), Job("y", "y")]
    assert run_order(unknown) == unknown


def test_pipelined_run_takes_the_shortest_video_first_then_the_longest(dataset):
    """Jobs carry their frame counts from the samples' metadata: the run tracks the shortest
    video first, the one without metadata (the broken file) next, then longest first."""
    outcomes = []
    ptf.track_dataset(dataset, load_tracker("lk"), grid_size=3, progress=False,
                      on_outcome=outcomes.append,
                      runner_options={"loaders": 1, "prefetch": 0, "store_processes": 0,
                                      "loader_processes": False})
    done = sorted((o for o in outcomes if o.status == "done"), key=lambda o: o.times["track"])
    names = [Path(o.job.path).name for o in done]
    # clip{i} has T + i frames
    assert names == ["clip0.mp4", *(f"clip{i}.mp4" for i in range(NUM_VIDEOS - 1, 0, -1))]
    assert [o.job.cost for o in done] == [T, *range(T + NUM_VIDEOS - 1, T, -1)]
    broken = next(o for o in outcomes if o.status == "failed")
    assert broken.job.cost is None and outcomes.index(broken) <= 1


def decoding_processes() -> list:
    import psutil

    return [p for p in psutil.Process().children()  # not the resource tracker
            if any("spawn_main" in part for part in p.cmdline())]


def test_decoding_processes_match_sequential(dataset):
    """Decoding in processes (the GPU default): frames come back through shared memory; the
    labels are the sequential run's, and no shared-memory block is left behind."""
    lk = load_tracker("lk")
    seq = ptf.track_dataset(dataset, lk, "seq", grid_size=4, backend="sequential",
                            progress=False)
    shm_before = set(os.listdir("/dev/shm"))
    outcomes = []

    summary = ptf.track_dataset(dataset, lk, "pipe", grid_size=4, progress=False,
                                runner_options={"store_processes": 0, "loaders": 2,
                                                "loader_processes": True, "prefetch": 0},
                                on_outcome=outcomes.append)
    assert sorted(summary.done) == sorted(seq.done) and summary.failed == seq.failed
    assert "broken.mp4" in next(iter(summary.failed.values()))
    loaders = [o.loader for o in outcomes if o.status == "done"]
    # The first two videos decode on a loader thread (before the processes are up); no
    # other does. (Here the second in the run order is the broken file.)
    assert loaders.count(os.getpid()) <= 2 and len(set(loaders) - {os.getpid()}) >= 1, loaders
    assert_same_run(dataset, "pipe", "seq")
    assert not {n for n in set(os.listdir("/dev/shm")) - shm_before if n.startswith("psm_")}


def test_with_decoding_processes_two_videos_decode_here_before_tracking(dataset, monkeypatch):
    """With decoding processes, the first two videos of the run order (the shortest, then the
    longest) decode in the tracking process, and tracking starts once both are decoded: the
    processes take longer to start than the first video takes to track. Every later video
    waits for the processes rather than decode beside the tracker."""
    from pointtrack import runners

    monkeypatch.setattr(runners, "DECODERS_START_S", 120.0)  # a slow CI machine
    dataset.delete_samples(dataset.match(F("filepath").ends_with("broken.mp4")))
    outcomes = []
    summary = ptf.track_dataset(dataset, load_tracker("lk"), "pipe", grid_size=3,
                                progress=False, on_outcome=outcomes.append,
                                runner_options={"store_processes": 0, "loaders": 2,
                                                "loader_processes": True})
    assert len(summary.done) == NUM_VIDEOS and not summary.failed
    by_track = sorted(outcomes, key=lambda o: o.times["track"][0])
    here = [o for o in by_track if o.loader == os.getpid()]
    assert [Path(o.job.path).name for o in here] == ["clip0.mp4", f"clip{NUM_VIDEOS - 1}.mp4"]
    assert by_track[:2] == here  # tracked first, in the run order
    first_track = by_track[0].times["track"][0]
    assert all(o.times["load"][1] <= first_track for o in here)
    assert None not in (o.loader for o in by_track)


def test_local_slow_decode_holds_back_only_its_own_job(tmp_path):
    """The tracker takes whichever video is decoded first: a slow decode (a long video)
    does not hold back the ones queued after it."""
    from pointtrack.runners import Job, run_local

    gate = tmp_path / "tracked"
    gate.mkdir()
    jobs = [Job(key, f"{key}.mp4") for key in ("a", "slow", "b", "c", "d", "e")]

    started = time.time()
    outcomes = run_local(jobs, GatedWork(str(gate)), load_tracker("lk"), loaders=2,
                         prefetch=1, store_processes=0, loader_processes=False)
    assert [o.status for o in outcomes] == ["done"] * 6
    assert outcomes[-1].job.key == "slow"
    assert time.time() - started < 25  # the gate opened: nothing waited for the slow decode


def test_decoded_clip_through_shared_memory_or_pipe(video_dir, monkeypatch):
    """A decoding process's clip comes back in shared memory, mapped and its name removed, or
    with the frames themselves when ``/dev/shm`` has no room; both equal a direct decode."""
    from pointtrack import runners
    from pointtrack.video import read_clip

    path = str(video_dir / "clip1.mp4")
    direct = read_clip(path, size=(64, 48))
    shared = runners._read_shared(path, {"size": (64, 48)})
    assert shared.frames is None and os.path.exists(f"/dev/shm/{shared.name}")
    clip = shared.clip()
    assert not os.path.exists(f"/dev/shm/{shared.name}")
    assert np.array_equal(clip.frames, direct.frames)
    assert np.array_equal(clip.frame_numbers, direct.frame_numbers)
    assert (clip.fps, clip.source_size) == (direct.fps, direct.source_size)

    class Full:
        f_bavail, f_frsize = 1, 4096

    monkeypatch.setattr(os, "statvfs", lambda path: Full())
    held = runners._read_shared(path, {"size": (64, 48)})
    assert held.frames is not None and held.name == ""
    assert np.array_equal(held.clip().frames, direct.frames)


def test_decoding_process_killed_mid_run(dataset):
    """A decoding process killed mid-run: its jobs are decoded on threads instead, every
    sample is done once, with the sequential run's labels."""
    slow = SlowLK()
    outcomes, killed = [], []

    def record(outcome):
        outcomes.append(outcome)
        if len(outcomes) == 1:
            deadline = time.monotonic() + 60
            while len(decoding_processes()) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(5)
        elif outcome.status == "done" and outcome.loader != os.getpid() and not killed:
            victim = decoding_processes()[0]
            victim.kill()
            killed.append(victim.pid)

    summary = ptf.track_dataset(dataset, slow, "pipe", grid_size=3, progress=False,
                                runner_options={"store_processes": 0, "loaders": 2,
                                                "loader_processes": True},
                                on_outcome=record)
    assert killed
    assert len(summary.done) == NUM_VIDEOS and len(summary.failed) == 1
    keys = [o.job.key for o in outcomes]
    assert len(keys) == len(set(keys)) == NUM_VIDEOS + 1
    ptf.track_dataset(dataset, load_tracker("lk"), "ref", grid_size=3, backend="sequential",
                      progress=False)
    assert_same_run(dataset, "pipe", "ref")


def test_claims_keep_a_sample_to_one_run(dataset):
    from pointtrack.fiftyone.claims import Claims

    sample_id = dataset.match(F("filepath").ends_with("clip0.mp4")).first().id
    mine, theirs = Claims(dataset._doc.id, "tracks"), Claims(dataset._doc.id, "tracks")
    assert mine.take(sample_id)
    assert mine.take(sample_id)  # a run may take its own claim again
    assert not theirs.take(sample_id)
    # A run that holds claims makes another skip those samples, and only those.
    summary = ptf.track_dataset(dataset, load_tracker("lk"), grid_size=3, progress=False)
    assert summary.skipped == [sample_id]
    assert len(summary.done) == NUM_VIDEOS - 1 and len(summary.failed) == 1
    mine.release(sample_id)
    assert theirs.take(sample_id)
    theirs.release_all()
    summary = ptf.track_dataset(dataset, load_tracker("lk"), grid_size=3, progress=False)
    assert summary.done == [sample_id]


CONCURRENT_SCRIPT = """
import os, pathlib, sys, time
import pointtrack.fiftyone as ptf
from pointtrack.trackers.lk import LucasKanadeTracker

class SlowLK(LucasKanadeTracker):
    def _track(self, clip, prompt):
        time.sleep(0.5)  # long enough for the two runs to overlap
        return super()._track(clip, prompt)

dataset = ptf.load_dataset(sys.argv[1])
# Both processes start their runs together: on a loaded machine one process's imports can
# take longer than the other's whole run.
barrier = pathlib.Path(sys.argv[2])
(barrier / str(os.getpid())).touch()
deadline = time.monotonic() + 120
while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:
    time.sleep(0.02)
summary = ptf.track_dataset(dataset, SlowLK(), grid_size=3, progress=False)
print("DONE", " ".join(summary.done))
"""


def test_two_concurrent_runs_track_each_sample_once(dataset, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(CONCURRENT_SCRIPT))
    barrier = tmp_path / "started"
    barrier.mkdir()
    procs = [subprocess.Popen([sys.executable, str(script), dataset.name, str(barrier)],
                              stdout=subprocess.PIPE, text=True, env=os.environ.copy())
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    done = [line.split()[1:] for out in outs for line in out.splitlines()
            if line.startswith("DONE")]
    assert len(done) == 2
    both = done[0] + done[1]
    assert len(both) == len(set(both)) == NUM_VIDEOS  # every good sample once, by one run
    assert done[0] and done[1], "both runs should have had work (they overlap)"
    ptf.track_dataset(dataset, load_tracker("lk"), "ref", grid_size=3, backend="sequential",
                      progress=False)
    assert_same_run(dataset, "tracks", "ref")


@pytest.fixture(scope="module")
def cotracker_checkpoint(tmp_path_factory) -> str:
    """Synthetic offline CoTracker3 weights saved to a file (Ray workers load a path)."""
    import torch

    from pointtrack.models.cotracker3 import CoTracker3Offline
    from pointtrack.models.weights import model_shapes, synthetic_state_dict

    path = tmp_path_factory.mktemp("weights") / "synthetic_offline.pth"
    torch.save(synthetic_state_dict(model_shapes(CoTracker3Offline()), seed=0), path)
    return str(path)


def cotracker_subset(dataset):
    """Two short clips and the broken file: CoTracker3 on CPU costs seconds per clip."""
    return dataset.match(F("filepath").ends_with(("/clip0.mp4", "/clip1.mp4", "/broken.mp4")))


def test_pipelined_cotracker_matches_sequential(dataset, cotracker_checkpoint):
    """Offline CoTracker3 through the GPU configuration of the pipelined runner (decoding
    processes, frames through shared memory, store processes) stores what the sequential
    runner stores, within the parity tolerance, and the same error for the broken file."""
    view = cotracker_subset(dataset)
    tracker = load_tracker("cotracker3-offline", checkpoint=cotracker_checkpoint)
    seq = ptf.track_dataset(view, tracker, "seq", grid_size=3, max_frames=6,
                            backend="sequential", progress=False)
    assert len(seq.done) == 2 and len(seq.failed) == 1
    summary = ptf.track_dataset(view, tracker, "pipe", grid_size=3, max_frames=6,
                                progress=False,
                                runner_options={"store_processes": 1, "loaders": 2,
                                                "loader_processes": True})
    assert sorted(summary.done) == sorted(seq.done) and summary.failed == seq.failed
    assert assert_same_run(view, "pipe", "seq", parity=True) == ["cotracker3-offline"] * 2


# -- Ray -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {k: v for k, v in os.environ.items()
                                       if k.startswith("FIFTYONE_")}})
    yield ray
    ray.shutdown()


def test_ray_matches_sequential(ray_cluster, dataset):
    lk = load_tracker("lk")
    seq = ptf.track_dataset(dataset, lk, "seq", grid_size=4, every=2, backend="sequential",
                            progress=False)
    outcomes = []
    # One store at a time: the other results wait for it in the driver.
    summary = ptf.track_dataset(dataset, lk, "ray", grid_size=4, every=2, backend="ray",
                                runner_options={"num_actors": 2, "max_stores": 1},
                                on_outcome=outcomes.append, progress=False)
    assert sorted(summary.done) == sorted(seq.done)
    assert summary.failed == seq.failed
    assert len({o.worker for o in outcomes if o.status == "done"}) == 2  # both actors worked
    assert all(o.worker != os.getpid() for o in outcomes if o.status == "done")
    for o in outcomes:  # each stage's process and wall-clock span, in the order they ran
        if o.status == "done":
            assert o.loader not in (None, os.getpid())
            t = o.times
            assert t["submitted"][0] <= t["load"][0] <= t["load"][1] <= t["track"][0]
            assert t["track"][0] <= t["track"][1] <= t["store"][0] <= t["store"][1]
    assert_same_run(dataset, "ray", "seq")
    again = ptf.track_dataset(dataset, lk, "ray", grid_size=4, every=2, backend="ray",
                              progress=False)
    assert len(again.skipped) == NUM_VIDEOS and not again.done  # done samples are skipped


def test_ray_cotracker_matches_sequential(ray_cluster, dataset, cotracker_checkpoint):
    """Offline CoTracker3 in a Ray actor (the model loaded there from the checkpoint's path)
    stores what the sequential runner stores, within the parity tolerance."""
    view = cotracker_subset(dataset)
    tracker = load_tracker("cotracker3-offline", checkpoint=cotracker_checkpoint)
    seq = ptf.track_dataset(view, tracker, "seq", grid_size=3, max_frames=6,
                            backend="sequential", progress=False)
    outcomes = []
    summary = ptf.track_dataset(view, tracker, "ray", grid_size=3, max_frames=6,
                                backend="ray", runner_options={"num_actors": 1},
                                on_outcome=outcomes.append, progress=False)
    assert sorted(summary.done) == sorted(seq.done) and summary.failed == seq.failed
    assert all(o.worker != os.getpid() for o in outcomes if o.status == "done")
    assert assert_same_run(view, "ray", "seq", parity=True) == ["cotracker3-offline"] * 2


def test_ray_actors_kept_across_runs(ray_cluster, dataset):
    """Kept actors serve a later run on another field (whose schema they have not seen)."""
    lk = load_tracker("lk")
    options = {"num_actors": 2, "keep_actors": True}
    from pointtrack.runners.ray import release_actors

    workers = []
    try:
        for field in ("first", "second"):
            outcomes = []
            ptf.track_dataset(dataset, lk, field, grid_size=3, backend="ray",
                              runner_options=options, on_outcome=outcomes.append,
                              progress=False)
            workers.append({o.worker for o in outcomes if o.status == "done"})
    finally:
        release_actors()  # kept actors hold the cluster's CPUs
    assert workers[0] == workers[1] and len(workers[0]) == 2  # the same two processes
    assert_same_run(dataset, "second", "first")
    assert len(dataset.exists("second_result")) == NUM_VIDEOS


class SlowLK(LucasKanadeTracker):
    def _track(self, clip, prompt):
        time.sleep(0.5)  # slow enough to kill an actor in the middle of the run
        return super()._track(clip, prompt)


def test_ray_worker_killed_mid_run(ray_cluster, dataset):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers can't import tests
    killed = []

    def kill_first_worker(outcome):
        if outcome.status == "done" and not killed:
            os.kill(outcome.worker, signal.SIGKILL)
            killed.append(outcome.worker)

    outcomes = []

    def record(outcome):
        outcomes.append(outcome)
        kill_first_worker(outcome)

    summary = ptf.track_dataset(dataset, SlowLK(), "ray", grid_size=3, backend="ray",
                                runner_options={"num_actors": 2, "prefetch": 2},
                                on_outcome=record, progress=False)
    assert killed
    assert len(summary.done) == NUM_VIDEOS and len(summary.failed) == 1
    assert [o.job.key for o in outcomes] and len({o.job.key for o in outcomes}) == len(outcomes)
    ptf.track_dataset(dataset, load_tracker("lk"), "ref", grid_size=3, backend="sequential",
                      progress=False)
    assert_same_run(dataset, "ray", "ref")


# -- Tracking processes (run_local(processes=N)) ---------------------------------------------


@pytest.fixture
def kept_processes():
    from pointtrack.runners.processes import release_processes

    yield
    release_processes()


def warm_processes(dataset, tracker, options) -> None:
    """A one-video run: returns once the kept process has started and built its tracker
    (the caller waits for it to end the run), so the next run starts with both warm."""
    ptf.track_dataset(dataset.limit(1), tracker, "warm", grid_size=3, runner_options=options,
                      progress=False)


def test_tracking_processes_match_sequential(dataset, kept_processes):
    slow = SlowLK()  # 0.5 s a video: both processes get work
    # One video loading ahead per pipeline, so that six videos are shared between the two
    # whenever the kept process asks. (A tracking process that ordered its feed with
    # `run_order` took every job left at once: this caught it about every other run.)
    options = {"processes": 2, "keep_processes": True, "store_processes": 1, "loaders": 1,
               "prefetch": 0}
    warm_processes(dataset, slow, options)
    outcomes = []
    summary = ptf.track_dataset(dataset, slow, "procs", grid_size=3, runner_options=options,
                                on_outcome=outcomes.append, progress=False)
    seq = ptf.track_dataset(dataset, load_tracker("lk"), "seq", grid_size=3,
                            backend="sequential", progress=False)
    assert sorted(summary.done) == sorted(seq.done) and summary.failed == seq.failed
    assert len(outcomes) == NUM_VIDEOS + 1
    workers = {o.worker for o in outcomes if o.status == "done"}
    assert len(workers) == 2 and os.getpid() in workers  # this process and the kept one
    assert_same_run(dataset, "procs", "seq")
    again = ptf.track_dataset(dataset, slow, "procs", grid_size=3, runner_options=options,
                              progress=False)
    assert len(again.skipped) == NUM_VIDEOS and not again.done


def test_tracking_process_killed_mid_run(dataset, kept_processes):
    slow = SlowLK()
    # Stores on a thread: a killed process leaves no store process of its own behind.
    options = {"processes": 2, "keep_processes": True, "store_processes": 0}
    warm_processes(dataset, slow, options)
    killed, outcomes = [], []

    def record(outcome):
        outcomes.append(outcome)
        if outcome.status == "done" and outcome.worker != os.getpid() and not killed:
            os.kill(outcome.worker, signal.SIGKILL)
            killed.append(outcome.worker)

    summary = ptf.track_dataset(dataset, slow, "procs", grid_size=3, runner_options=options,
                                on_outcome=record, progress=False)
    assert killed
    assert len(summary.done) == NUM_VIDEOS and len(summary.failed) == 1
    keys = [o.job.key for o in outcomes]
    assert len(keys) == len(set(keys)) == NUM_VIDEOS + 1  # each sample reported once
    ptf.track_dataset(dataset, load_tracker("lk"), "ref", grid_size=3, backend="sequential",
                      progress=False)
    assert_same_run(dataset, "procs", "ref")
    # The next run with these options starts a fresh process in place of the dead one.
    more = ptf.track_dataset(dataset, slow, "more", grid_size=3, runner_options=options,
                             progress=False)
    assert len(more.done) == NUM_VIDEOS


UNGUARDED_SCRIPT = """
import sys
import pointtrack.fiftyone as ptf
from pointtrack.trackers import load_tracker

# No `if __name__ == "__main__":` guard: spawned processes must not run this again.
summary = ptf.track_dataset(ptf.load_dataset(sys.argv[1]), load_tracker("lk"), grid_size=3,
                            progress=False, runner_options={"processes": 2,
                                                            "store_processes": 1})
print("DONE", len(summary.done), len(summary.failed))
"""


def test_processes_from_a_script_without_main_guard(dataset, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(UNGUARDED_SCRIPT))
    out = subprocess.run([sys.executable, str(script), dataset.name], capture_output=True,
                         text=True, env=os.environ.copy(), timeout=300)
    assert f"DONE {NUM_VIDEOS} 1" in out.stdout, out.stderr[-2000:]


def test_cli_processes_flag(dataset, capsys):
    assert main(["dataset", "track", dataset.name, "--engine", "lk", "--grid-size", "3",
                 "--processes", "2", "--no-progress"]) == 1  # the broken video failed
    dataset.reload()
    assert len(dataset.exists("tracks_result")) == NUM_VIDEOS
    capsys.readouterr()
    assert main(["dataset", "track", dataset.name, "--engine", "lk", "--processes", "0"]) == 2
    assert "--processes must be >= 1" in capsys.readouterr().err


def test_cli_loader_processes_flag(dataset, capsys):
    assert main(["dataset", "track", dataset.name, "--engine", "lk", "--grid-size", "3",
                 "--loader-processes", "--store-processes", "1", "--no-progress"]) == 1
    dataset.reload()
    assert len(dataset.exists("tracks_result")) == NUM_VIDEOS
    out = capsys.readouterr()
    assert "broken.mp4" in out.out + out.err  # the failed sample, named


def test_ray_slow_decode_holds_back_only_its_own_job(ray_cluster, tmp_path):
    """An actor gets only decoded jobs: a decode that waits (a Ray worker starting, a long
    video) does not hold back the jobs queued after it."""
    import ray.cloudpickle

    from pointtrack.runners import Job
    from pointtrack.runners.ray import run_ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers can't import tests
    gate = tmp_path / "tracked"
    gate.mkdir()
    jobs = [Job(key, f"{key}.mp4") for key in ("a", "slow", "b", "c", "d", "e")]

    started = time.time()
    outcomes = run_ray(jobs, GatedWork(str(gate)), load_tracker("lk"), num_actors=1,
                       prefetch=1)
    assert [o.status for o in outcomes] == ["done"] * 6
    # Tracked last (outcomes come in the order stores end: "e"'s store task may wait for a
    # Ray worker longer than "slow" takes to be decoded, tracked and stored).
    last_tracked = max(outcomes, key=lambda o: o.times["track"][0])
    assert last_tracked.job.key == "slow"
    # Its decode waited for every other job's track to start (the gate's file is written
    # inside `track`; the end of a track is stamped after it returns, which on a loaded VM can
    # come after the slow decode has seen the file: failed once in CI).
    assert all(o.times["track"][0] <= last_tracked.times["load"][1]
               for o in outcomes if o is not last_tracked)
    assert time.time() - started < 25  # the gate opened: nothing waited for the slow decode


def test_ray_workers_warmed_before_a_run(ray_cluster, tmp_path, monkeypatch):
    """A run first has as many Ray workers as its loads and stores need at once import
    what they need, each in a process of its own; once per cluster and driver."""
    import ray.cloudpickle

    from pointtrack.runners import ray as pt_ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers can't import tests
    monkeypatch.setattr(pt_ray, "_warmed", {})  # earlier runs on this cluster warmed some
    work = ray_cluster.put(GatedWork(str(tmp_path)))
    pids = pt_ray._warm_workers(ray_cluster, work, 3)
    assert len(pids) == 3 and os.getpid() not in pids
    assert pt_ray._warm_workers(ray_cluster, work, 3) == set()  # already warm
    assert pt_ray._warm_workers(ray_cluster, work, 2) == set()


def test_ray_run_says_what_it_waits_for(ray_cluster, dataset, monkeypatch, caplog):
    import ray.cloudpickle

    import pointtrack.runners.ray as pt_ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers can't import tests
    monkeypatch.setattr(pt_ray, "STALL_S", 0.2)  # each video takes 0.5 s
    with caplog.at_level("WARNING", logger="pointtrack.runners.ray"):
        summary = ptf.track_dataset(dataset, SlowLK(), "ray", grid_size=3, backend="ray",
                                    runner_options={"num_actors": 1}, progress=False)
    assert len(summary.done) == NUM_VIDEOS  # waiting is reported, not treated as failure
    assert any("no Ray task finished in" in r.getMessage() and "free resources" in r.getMessage()
               for r in caplog.records)


def test_ray_clip_too_long_for_memory_is_a_recorded_error(dataset, monkeypatch):
    """A Ray run checks each clip's memory where it is decoded, on the worker, against the
    driver's POINTTRACK_MEMORY_LIMIT (which the cluster the runner starts hands its workers):
    each sample records the local runner's message. In a child process, so that the runner
    starts the cluster (the module's cluster was started without the limit)."""
    pytest.importorskip("ray")
    from pointtrack.runners.ray import worker_env

    monkeypatch.setenv("POINTTRACK_MEMORY_LIMIT", "1K")
    assert worker_env()["POINTTRACK_MEMORY_LIMIT"] == "1K"  # a remote node's workers get it
    local = ptf.track_dataset(dataset, load_tracker("lk"), "local", grid_size=3, progress=False)
    script = textwrap.dedent("""
        import json, sys
        import fiftyone as fo
        import pointtrack.fiftyone as ptf
        from pointtrack.trackers import load_tracker

        summary = ptf.track_dataset(fo.load_dataset(sys.argv[1]), load_tracker("lk"), "ray",
                                    grid_size=3, backend="ray", progress=False,
                                    runner_options={"num_actors": 1})
        print(json.dumps(summary.failed))
    """)
    r = subprocess.run([sys.executable, "-c", script, dataset.name], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    failed = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(failed) == NUM_VIDEOS + 1 and failed == local.failed
    good = [e for e in failed.values() if "broken.mp4" not in e]
    assert all("track fewer frames" in e and "0.0 GiB available" in e for e in good), good
    assert not dataset.exists("ray_result")


def test_estimator_travels_without_the_model():
    """What a Ray run ships to the workers that decode: the engine's estimates, not its
    weights (here an in-memory state dict, which the tracker itself keeps)."""
    import pickle

    from pointtrack.models.cotracker3 import CoTracker3Offline
    from pointtrack.models.weights import model_shapes, synthetic_state_dict

    weights = synthetic_state_dict(model_shapes(CoTracker3Offline()))
    tracker = load_tracker("cotracker3-offline", checkpoint=weights)
    data = pickle.dumps(tracker.estimator())
    assert len(data) < 10_000 and tracker.checkpoint is weights
    copy = pickle.loads(data)
    args = (1500, (1920, 1080), 100)
    assert copy.memory_estimate(*args) == tracker.memory_estimate(*args)
    assert copy.device_memory_estimate(1500, 100) == tracker.device_memory_estimate(1500, 100)


# -- CLI -------------------------------------------------------------------------------------


def test_cli_ray_without_ray_is_one_line(dataset, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code = main(["dataset", "track", dataset.name, "--engine", "lk", "--ray", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and "pointtrack[ray]" in err
    assert not dataset.exists("tracks_result")


def test_cli_backends_store_the_same(dataset, capsys):
    code = main(["dataset", "track", dataset.name, "--engine", "lk", "--grid-size", "3",
                 "--field", "seq", "--sequential", "--no-progress"])
    assert code == 1  # the broken video failed, the rest were tracked
    code = main(["dataset", "track", dataset.name, "--engine", "lk", "--grid-size", "3",
                 "--no-progress"])
    assert code == 1
    assert "6 tracked, 0 skipped" in capsys.readouterr().out
    assert_same_run(dataset, "tracks", "seq")
    np.testing.assert_equal(len(dataset.exists("tracks_error")), 1)


def test_clip_too_long_for_memory_is_refused_before_decoding(dataset, monkeypatch):
    """With too little memory for any clip, each sample records the advice and nothing is
    decoded (the pipelined and the sequential runner alike)."""
    import pointtrack.video

    decoded = []
    real = pointtrack.video.read_clip
    monkeypatch.setattr("pointtrack.fiftyone.run.read_clip_offloaded",
                        lambda *a, **k: decoded.append(a) or real(*a, **k))
    monkeypatch.setenv("POINTTRACK_MEMORY_LIMIT", "1K")
    for backend in ("local", "sequential"):
        summary = ptf.track_dataset(dataset, load_tracker("lk"), backend, grid_size=3,
                                    backend=backend, progress=False)
        assert not summary.done and len(summary.failed) == NUM_VIDEOS + 1
        good = [e for e in summary.failed.values() if "broken.mp4" not in e]
        assert len(good) == NUM_VIDEOS
        assert all("track fewer frames" in e and "0.0 GiB available" in e for e in good), good
    assert not decoded


def test_long_clips_stream_into_engines_that_stream(dataset, monkeypatch):
    """Clips over `STREAM_OVER_BYTES` go a batch at a time into an engine that streams,
    decoded while tracked (never whole), and store exactly what whole clips give."""
    import pointtrack.video

    lk = load_tracker("lk")
    whole = ptf.track_dataset(dataset, lk, "whole", grid_size=4, every=2, backend="sequential",
                              progress=False)
    assert len(whole.done) == NUM_VIDEOS
    decoded = []
    real = pointtrack.video.read_clip
    monkeypatch.setattr("pointtrack.fiftyone.run.read_clip_offloaded",
                        lambda *a, **k: decoded.append(a) or real(*a, **k))
    monkeypatch.setattr("pointtrack.fiftyone.run.STREAM_OVER_BYTES", 0)
    monkeypatch.setattr("pointtrack.trackers.base.STREAM_BATCH_FRAMES", 3)
    for backend in ("local", "sequential"):
        summary = ptf.track_dataset(dataset, lk, backend, grid_size=4, every=2,
                                    backend=backend, progress=False)
        assert sorted(summary.done) == sorted(whole.done)
        assert_same_run(dataset, backend, "whole")
    assert not decoded
    # Backward tracking needs the whole clip: decoded whole even when long.
    one = dataset.match(F("filepath").ends_with("clip0.mp4"))
    summary = ptf.track_dataset(one, lk, "backward", grid_size=4, backward_tracking=True,
                                progress=False)
    assert len(summary.done) == 1 and len(decoded) == 1


def test_long_clip_streams_into_online_cotracker(dataset, monkeypatch):
    """Online CoTracker3 (synthetic weights) on a streamed clip stores what the whole clip
    gives, with queries on a later frame."""
    from pointtrack.models.cotracker3 import CoTracker3Online
    from pointtrack.models.weights import model_shapes, synthetic_state_dict

    online = load_tracker("cotracker3-online",
                          checkpoint=synthetic_state_dict(model_shapes(CoTracker3Online()), seed=0))
    one = dataset.match(F("filepath").ends_with("clip1.mp4"))
    queries = np.array([[2, 20.0, 30.0], [4, 50.5, 40.0], [0, 70.0, 60.0]])
    ptf.track_dataset(one, online, "whole", queries=queries, backend="sequential", progress=False)
    monkeypatch.setattr("pointtrack.fiftyone.run.STREAM_OVER_BYTES", 0)
    monkeypatch.setattr("pointtrack.trackers.base.STREAM_BATCH_FRAMES", 5)
    # Any whole decode fails.
    monkeypatch.setattr("pointtrack.fiftyone.run.read_clip_offloaded", None)
    summary = ptf.track_dataset(one, online, "streamed", queries=queries, backend="sequential",
                                progress=False)
    assert len(summary.done) == 1, summary
    sample = one.first()
    streamed = ptf.tracks_from_sample(sample, "streamed")
    assert streamed.equals(ptf.tracks_from_sample(sample, "whole"))
    assert streamed.num_frames == T + 1


def test_lower_priority_once_per_thread():
    """Loaders, stores and Ray's load/store tasks yield the CPU to the tracking thread: +5
    nice once per thread, however many tasks the thread runs; other threads keep theirs."""
    import threading

    from pointtrack.runners import _lower_priority

    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    seen = {}

    def task() -> None:
        before = nice()
        _lower_priority()
        _lower_priority()  # a second task on the same thread
        seen["delta"] = nice() - before

    base = nice()
    thread = threading.Thread(target=task)
    thread.start()
    thread.join()
    assert seen["delta"] == min(5, 19 - base)
    assert nice() == base


def _exit_slowly(seconds: float) -> int:
    """In a pool's process: make its exit take ``seconds`` (a store process with torch and
    FiftyOne loaded takes about a second to exit)."""
    from multiprocessing.util import Finalize

    Finalize(None, time.sleep, args=(seconds,), exitpriority=100)
    return os.getpid()


def test_finished_run_does_not_wait_for_its_helper_processes_to_exit():
    """A run that stored everything returns while its store processes are still exiting:
    dropping a process pool must not wait for them either (from Python 3.12, a collected
    pool takes a lock that its manager thread holds while it joins the processes)."""
    import gc

    import psutil

    from pointtrack.runners import _process_pool, _stores_ended

    pool, started = _process_pool(1, None)
    for future in started:
        future.result()
    child = psutil.Process(pool.submit(_exit_slowly, 20.0).result())
    with _stores_ended(pool, aborted=[]):
        pass
    time.sleep(0.5)  # the pool's manager thread is now joining the process
    del pool, started
    gc.collect()
    assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE  # not waited for
    child.wait(timeout=60)  # and it does end, on its own
