"""Overlay videos beside the originals: a grouped dataset with slices original and overlay,
built from real encoded videos tracked with lk (real MongoDB, run through scripts/test.sh)."""

from __future__ import annotations

import uuid

import fiftyone as fo
import numpy as np
import pytest
from conftest import textured_frames

import pointtrack.fiftyone as ptf
from pointtrack.cli import main
from pointtrack.render import track_colors
from pointtrack.trackers import load_tracker
from pointtrack.video import iter_frames, probe, write_video

T, SIZE = 10, (320, 240)


@pytest.fixture
def tracked(tmp_path):
    """A dataset of two videos tracked with lk (a 3 x 3 grid, every frame) into ``tracks``."""
    folder = tmp_path / "videos"
    for i in range(2):
        write_video(folder / f"v{i}.mp4", textured_frames(T, size=SIZE, seed=i), fps=10)
    dataset = ptf.create_dataset(folder, f"pt-ov-{uuid.uuid4().hex[:8]}")
    ptf.track_dataset(dataset, load_tracker("lk"), "tracks", grid_size=3, progress=False)
    yield dataset
    for name in (dataset.name, f"{dataset.name}-overlays"):
        if fo.dataset_exists(name):
            fo.load_dataset(name).delete()


def keypoints(sample) -> dict[int, list]:
    return {fn: [(k.index, k.points[0]) for k in frame["tracks"].keypoints]
            for fn, frame in sample.frames.items() if frame["tracks"] is not None}


def test_groups_have_both_slices_and_overlays_show_the_tracks(tracked, tmp_path):
    summary = ptf.add_overlays(tracked, "tracks", tmp_path / "overlays")
    groups = summary.dataset
    assert groups.name == f"{tracked.name}-overlays" and groups.media_type == "group"
    assert sorted(groups.group_slices) == ["original", "overlay"]
    assert groups.default_group_slice == "original"
    # What `pointtrack app NAME-overlays` checks before opening it: the keypoint frame field.
    assert "tracks" in groups.get_frame_field_schema()
    assert len(summary.rendered) == 2 and summary.skipped == []
    group_ids = groups.distinct("group.id")
    assert len(group_ids) == 2
    for gid in group_ids:
        group = groups.get_group(gid)
        assert sorted(group) == ["original", "overlay"]
        original, overlay = group["original"], group["overlay"]
        source = tracked[original["source_id"]]
        assert overlay["source_id"] == source.id and original.filepath == source.filepath
        # The copy keeps its frames: the same keypoints as the source sample.
        assert keypoints(original) == keypoints(source) != {}
        tracks = ptf.tracks_from_sample(source, "tracks")
        assert overlay.metadata.total_frame_count == probe(overlay.filepath).num_frames == T
        colors = track_colors(tracks.num_tracks).astype(int)
        near, seen = 0, 0
        for t, frame in enumerate(iter_frames(overlay.filepath)):
            image = frame.image.astype(int)
            for n in np.flatnonzero(tracks.visible[t]):
                x, y = np.round(tracks.xy[t, n]).astype(int)
                seen += 1
                near += np.abs(image[y, x] - colors[n]).max() < 60
        assert seen > 0 and near >= 0.9 * seen, (near, seen)  # the dots are in track colours
    assert ptf.color_scheme("tracks").fields == groups.app_config.color_scheme.fields


def test_rerun_skips_and_overwrite_replaces(tracked, tmp_path):
    out = tmp_path / "overlays"
    first = ptf.add_overlays(tracked, "tracks", out)
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 2 and not any(name.startswith(".") for name in files)
    mtimes = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    again = ptf.add_overlays(tracked, "tracks", out)
    assert again.rendered == [] and sorted(again.skipped) == sorted(first.rendered)
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    redo = ptf.add_overlays(tracked, "tracks", out, overwrite=True)
    assert sorted(redo.rendered) == sorted(first.rendered)
    assert len(redo.dataset.select_group_slices()) == 4  # still one group per sample
    assert len(redo.dataset.distinct("group.id")) == 2
    assert sorted(p.name for p in out.iterdir()) == files


def test_cli_overlays_and_bad_input(tracked, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["dataset", "overlays", tracked.name, "--field", "tracks", "--out", str(out),
                 "--no-progress", "--max-side", "160"])
    stdout, _ = capsys.readouterr()
    assert code == 0 and "2 overlays rendered" in stdout
    groups = fo.load_dataset(f"{tracked.name}-overlays")
    for sample in groups.select_group_slices("overlay"):
        info = probe(sample.filepath)
        assert (info.width, info.height, info.num_frames) == (160, 120, T)
    code = main(["dataset", "overlays", tracked.name, "--field", "nope", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err == f"pointtrack: error: dataset '{tracked.name}' has no tracks " \
        "field 'nope'\n"
    code = main(["dataset", "overlays", tracked.name, "--out", str(out), "--group-name",
                 tracked.name])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "another dataset" in err
