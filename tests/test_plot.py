"""Trajectory plots of real tracks: the figure's line data, the PNG, the CLI's three sources."""

from __future__ import annotations

import uuid

import cv2
import fiftyone as fo
import numpy as np
import pytest

import pointtrack.fiftyone as ptf
from pointtrack.cli import main
from pointtrack.plot import plot_tracks
from pointtrack.render import track_colors
from pointtrack.synthetic import write_synthetic
from pointtrack.tracks import Tracks


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A generated clip and its exact ground truth, which has occluded stretches."""
    path = tmp_path_factory.mktemp("plot") / "clip.mp4"
    video = write_synthetic(path, seed=3, num_frames=16, size=(128, 96), num_points=20)
    assert (~video.tracks.visible).any() and video.tracks.visible.any()
    return path, video.tracks


def test_line_data_is_the_tracks_with_gaps_when_occluded(clip):
    _, tracks = clip
    fig = plot_tracks(tracks)
    ax_x, ax_y = fig.axes
    assert len(ax_x.lines) == len(ax_y.lines) == tracks.num_tracks
    colors = track_colors(tracks.num_tracks) / 255.0
    for n in range(tracks.num_tracks):
        for ax, c in ((ax_x, 0), (ax_y, 1)):
            line = ax.lines[n]
            np.testing.assert_array_equal(line.get_xdata(), tracks.frame_numbers)
            expected = np.where(tracks.visible[:, n], tracks.xy[:, n, c], np.nan)
            np.testing.assert_array_equal(line.get_ydata(), expected)  # NaN where occluded
            np.testing.assert_allclose(line.get_color(), colors[n])
    some = plot_tracks(tracks, track_ids=[4, 1])
    assert [line.get_label() for line in some.axes[0].lines] == ["4", "1"]
    with pytest.raises(ValueError, match="track ids"):
        plot_tracks(tracks, track_ids=[tracks.num_tracks])


def check_png(path, size=(1000, 600)) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, f"{path} does not decode"
    assert (image.shape[1], image.shape[0]) == size  # figsize (10, 6) at 100 dpi
    # Lines in track colours, not a blank canvas: strongly saturated pixels.
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    assert (hsv[..., 1] > 150).sum() > 500
    return image


def test_cli_plot_from_tracks_file(clip, tmp_path, capsys):
    _, tracks = clip
    npz = tracks.save(tmp_path / "gt.tracks.npz")
    out = tmp_path / "plots" / "gt.png"
    assert main(["plot", str(npz), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    check_png(out)
    assert [p.name for p in out.parent.iterdir()] == ["gt.png"]  # no temporary left


def test_cli_plot_tracks_a_video(clip, tmp_path, capsys):
    path, _ = clip
    out = tmp_path / "video.png"
    assert main(["plot", str(path), "--out", str(out), "--engine", "lk", "--grid-size", "3"]) == 0
    check_png(out)


def test_cli_plot_from_a_dataset_sample(clip, tmp_path, capsys):
    path, tracks = clip
    dataset = fo.Dataset(f"pt-plot-{uuid.uuid4().hex[:8]}")
    try:
        sample = fo.Sample(filepath=str(path), metadata=ptf.video_metadata(str(path)))
        dataset.add_sample(sample)
        ptf.add_tracks(sample, tracks, "ground_truth")
        out = tmp_path / "sample.png"
        assert main(["plot", "--dataset", dataset.name, "--sample-id", sample.id,
                     "--field", "ground_truth", "--out", str(out)]) == 0
        check_png(out)
        code = main(["plot", "--dataset", dataset.name, "--sample-id", sample.id,
                     "--field", "nope", "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and err == f"pointtrack: error: dataset '{dataset.name}' has no " \
            "tracks field 'nope'\n"
    finally:
        dataset.delete()


def test_cli_plot_bad_input_writes_nothing(clip, tmp_path, capsys):
    _, tracks = clip
    npz = tracks.save(tmp_path / "t.npz")
    for argv, message in [
        (["plot", str(tmp_path / "none.npz"), "--out", str(tmp_path / "a.png")], "no such file"),
        (["plot", str(npz), "--out", str(tmp_path / "a.txt")], "cannot write a plot as txt"),
        (["plot", str(npz), "--out", str(tmp_path / "a.png"), "--tracks", "0,x"], "--tracks"),
        (["plot", "--out", str(tmp_path / "a.png")], "give a tracks file"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npz"]


def test_plot_of_sampled_tracks_uses_source_frame_numbers(clip):
    _, tracks = clip
    rows = slice(0, None, 3)
    sampled = Tracks(xy=tracks.xy[rows], visible=tracks.visible[rows], queries=tracks.queries,
                     frame_numbers=tracks.frame_numbers[rows], frame_size=tracks.frame_size)
    line = plot_tracks(sampled).axes[1].lines[0]
    assert line.get_xdata().tolist() == [0, 3, 6, 9, 12, 15]
