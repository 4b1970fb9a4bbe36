"""Reliability and safety: safe checkpoint loading, write faults, memory checks, the App's
address. Real files, real subprocesses, real MongoDB."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pointtrack import Tracks
from pointtrack.models.cotracker3 import CoTracker3Offline
from pointtrack.models.weights import (
    CheckpointError,
    load_state_dict,
    load_weights,
    model_shapes,
    synthetic_state_dict,
)


def run_cli(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "pointtrack", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)


def assert_clean_error(r, *needles):
    """Exit 2, one line on stderr naming the problem, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pointtrack: error: "), r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# -- Safe loading -----------------------------------------------------------------------------


class _Evil:
    """Unpickling this calls ``Path.touch(marker)``: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"fnet.conv1.weight": torch.zeros(1), "payload": _Evil(marker)}, path)
    assert not marker.exists()
    return path, marker


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    path, marker = evil_checkpoint(tmp_path)
    for checkpoint in (str(path), path.as_uri()):
        with pytest.raises(CheckpointError, match="refused: the checkpoint holds Python objects"):
            load_state_dict(checkpoint, "scaled_offline")
        assert not marker.exists()
    # Sanity of the test itself: a full unpickle would have run the payload.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_malicious_pickle_cli_one_line(make_video, tmp_path):
    video, _ = make_video(num_frames=4, size=(64, 48))
    path, marker = evil_checkpoint(tmp_path)
    out = tmp_path / "t.npz"
    r = run_cli("track", video, "--engine", "cotracker3-offline", "--checkpoint", path,
                "--grid-size", 2, "--out", out)
    assert_clean_error(r, "refused", str(path))
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("url", ["http://example.com/w.pth", "ftp://example.com/w.pth",
                                 "s3://bucket/w.pth", "file://otherhost/tmp/w.pth"])
def test_only_https_and_file_urls(url):
    with pytest.raises(CheckpointError, match="not allowed|must name a local file"):
        load_state_dict(url, "scaled_offline")


def test_file_url_reads_in_place(tmp_path):
    state = synthetic_state_dict(model_shapes(CoTracker3Offline()))
    path = tmp_path / "dir with space" / "w.pth"
    path.parent.mkdir()
    torch.save(state, path)
    model = load_weights(CoTracker3Offline(), path.as_uri(), "scaled_offline")
    assert torch.equal(model.time_emb, state["time_emb"])


def test_truncated_and_wrong_checkpoints_name_the_problem(tmp_path):
    state = synthetic_state_dict(model_shapes(CoTracker3Offline()))
    good = tmp_path / "good.pth"
    torch.save(state, good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_state_dict(str(cut), "scaled_offline")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a state dict of tensors"):
        load_state_dict(str(tmp_path / "list.pth"), "scaled_offline")
