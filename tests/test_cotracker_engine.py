"""CoTracker3 engines: edge cases, point groups, dense tracking, streaming, checkpoints, CLI.

Weights are synthetic (the parity recipe): the tracks mean nothing about the video, but
shapes, coordinates, bookkeeping and determinism are all real.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointtrack.models.cotracker3 import CoTracker3Offline, CoTracker3Online
from pointtrack.models.weights import (
    CHECKPOINTS,
    CheckpointError,
    load_state_dict,
    load_weights,
    model_shapes,
    synthetic_state_dict,
)
from pointtrack.trackers import PromptError, load_tracker
from pointtrack.trackers.cotracker import fast_cpu_precision
from pointtrack.tracks import Tracks
from pointtrack.video import write_video


def make_video(T: int, w: int, h: int, seed: int = 0) -> np.ndarray:
    """A textured square moving right over a noise background."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    patch = rng.integers(0, 255, (h // 3, w // 3, 3), dtype=np.uint8)
    frames = []
    for t in range(T):
        f = background.copy()
        x0 = min(w - patch.shape[1], t * 2)
        f[h // 3 : h // 3 + patch.shape[0], x0 : x0 + patch.shape[1]] = patch
        frames.append(f)
    return np.stack(frames)


@pytest.fixture(scope="module")
def offline_weights() -> dict:
    return synthetic_state_dict(model_shapes(CoTracker3Offline()), seed=0)


@pytest.fixture(scope="module")
def online_weights() -> dict:
    return synthetic_state_dict(model_shapes(CoTracker3Online()), seed=0)


@pytest.fixture(scope="module")
def offline(offline_weights):
    return load_tracker("cotracker3-offline", checkpoint=offline_weights)


@pytest.fixture(scope="module")
def online(online_weights):
    return load_tracker("cotracker3-online", checkpoint=online_weights)


def check_tracks(tracks: Tracks, T: int, N: int, size: tuple[int, int]) -> None:
    assert tracks.xy.shape == (T, N, 2)
    assert np.isfinite(tracks.xy).all()
    assert tracks.frame_size == size
    for p in (tracks.visibility, tracks.confidence):
        assert p is not None and p.shape == (T, N) and (p >= 0).all() and (p <= 1).all()


# -- Edge cases -------------------------------------------------------------------------------


def test_one_frame_video_offline_and_online(offline, online):
    video = make_video(1, 40, 30)
    q = np.array([[0, 10.5, 20.0]])
    for tracker in (offline, online):
        tracks = tracker.track(video, queries=q)
        check_tracks(tracks, 1, 1, (40, 30))
        assert tracks.tracker == tracker.name
        assert tracks.options["checkpoint"] == "<state dict>"
    # Offline: a query's own frame is the query point, visible.
    tracks = offline.track(video, queries=q)
    np.testing.assert_allclose(tracks.xy[0, 0], [10.5, 20.0], atol=1e-4)
    assert tracks.visible[0, 0]


def test_query_on_last_frame_small_video_backward(offline):
    """Video smaller than 384x512 (resized inside), a query on the last frame, tracked back."""
    video = make_video(3, 48, 36)
    q = np.array([[2, 47.0, 35.0], [0, 0.0, 0.0], [1, 24.0, 18.0]])
    tracks = offline.track(video, queries=q, backward_tracking=True)
    check_tracks(tracks, 3, 3, (48, 36))
    np.testing.assert_allclose(tracks.xy[[2, 0, 1], [0, 1, 2]], q[:, 1:], atol=1e-4)
    assert tracks.visible[[2, 0, 1], [0, 1, 2]].all()
    np.testing.assert_allclose(tracks.queries, q, atol=1e-4)
    # Forward only: the frames before the last-frame query differ from the backward pass.
    forward = offline.track(video, queries=q)
    assert not np.allclose(forward.xy[:2, 0], tracks.xy[:2, 0])
    np.testing.assert_array_equal(forward.xy[:, 1], tracks.xy[:, 1])  # query on frame 0


def test_single_point_and_grid_with_mask(offline):
    video = make_video(2, 64, 48)
    tracks = offline.track(video, queries=[[1, 30.0, 12.0]])
    check_tracks(tracks, 2, 1, (64, 48))
    mask = np.zeros((48, 64), bool)
    mask[:, :32] = True  # left half
    tracks = offline.track(video, grid_size=4, segm_mask=mask, grid_query_frame=1)
    check_tracks(tracks, 2, 8, (64, 48))  # the 2 left columns of the 4x4 grid
    assert (tracks.queries[:, 0] == 1).all() and (tracks.queries[:, 1] < 32).all()
    with pytest.raises(PromptError, match="mask"):
        tiny = np.zeros((48, 64), bool)
        tiny[24, 32] = True
        offline.track(video, grid_size=2, segm_mask=tiny)


def test_many_points_are_tracked_in_round_robin_groups(offline_weights):
    video = make_video(2, 64, 48)
    rng = np.random.default_rng(1)
    q = np.column_stack([rng.integers(0, 2, 6), rng.uniform(0, 63, 6), rng.uniform(0, 47, 6)])
    small = load_tracker("cotracker3-offline", checkpoint=offline_weights, max_points=38)
    whole = small.track(video, queries=q)  # 2 queries + 36 support points per call: 3 groups
    check_tracks(whole, 2, 6, (64, 48))
    big = load_tracker("cotracker3-offline", checkpoint=offline_weights)
    group = big.track(video, queries=q[0::3])
    np.testing.assert_allclose(whole.xy[:, 0::3], group.xy, atol=1e-4)
    np.testing.assert_allclose(whole.visibility[:, 0::3], group.visibility, atol=1e-5)


def test_track_dense_every_pixel(offline_weights):
    video = make_video(2, 16, 12)
    tracker = load_tracker("cotracker3-offline", checkpoint=offline_weights, max_points=100)
    tracks = tracker.track_dense(video, grid_query_frame=1)
    check_tracks(tracks, 2, 16 * 12, (16, 12))
    ys, xs = np.mgrid[0:12, 0:16]
    pixels = np.stack([xs.ravel(), ys.ravel()], axis=1)
    np.testing.assert_allclose(tracks.queries[:, 1:], pixels, atol=1e-4)
    np.testing.assert_allclose(tracks.xy[1], pixels, atol=1e-4)  # the query frame
    sparse = tracker.track_dense(video, stride=4)
    assert sparse.num_tracks == 4 * 3


# -- Online: streaming ------------------------------------------------------------------------


def test_stream_equals_track(online):
    video = make_video(17, 32, 24)  # two windows: [0, 16) and [8, 17)
    q = np.array([[0, 5.0, 5.0], [3, 20.0, 10.0], [16, 31.0, 23.0]])  # one on the last frame
    whole = online.track(video, queries=q)
    check_tracks(whole, 17, 3, (32, 24))

    stream = online.stream(queries=q)
    partial = [stream.push(video[a:b]) for a, b in ((0, 5), (5, 7), (7, 16), (16, 17))]
    assert [p.num_frames for p in partial] == [0, 0, 16, 16]  # a window needs 16 frames
    final = stream.finish()
    assert final.equals(whole)
    np.testing.assert_array_equal(partial[2].xy[:8], whole.xy[:8])  # rows before window 2
    with pytest.raises(RuntimeError, match="finished"):
        stream.push(video[:1])


def test_online_track_of_a_path_decodes_while_tracking(online, tmp_path, monkeypatch):
    """`track(path)` on the online engine feeds the decoder's frames into its stream a batch at
    a time (never the whole clip in memory): the same tracks as tracking the decoded clip.
    Backward tracking needs the whole clip, and decodes it first."""
    from pointtrack.trackers import base
    from pointtrack.video import read_clip

    path = write_video(tmp_path / "walk.mp4", make_video(17, 64, 48, seed=3), fps=12.0)
    q = np.array([[0, 10.0, 10.0], [5, 40.0, 30.0], [16, 60.0, 40.0]])
    decoded = read_clip(path, size=online.input_size)
    whole = online.track(decoded, queries=q)
    monkeypatch.setattr(base, "STREAM_BATCH_FRAMES", 7)  # batches that split the windows
    calls = []
    monkeypatch.setattr(base, "read_clip", lambda *a, **k: calls.append(a) or read_clip(*a, **k))
    streamed = online.track(path, queries=q)
    assert not calls and streamed.equals(whole)
    assert streamed.fps == 12.0 and streamed.frame_size == (64, 48)
    # The prompt is checked against the file before any frame is decoded.
    with pytest.raises(PromptError, match="query frame 17"):
        online.track(path, queries=[[17, 10.0, 10.0]])
    back = online.track(path, queries=q, backward_tracking=True)
    assert len(calls) == 1
    assert back.equals(online.track(decoded, queries=q, backward_tracking=True))
    assert not np.array_equal(back.xy[:5, 1], streamed.xy[:5, 1])  # before its query frame
    np.testing.assert_array_equal(back.xy[5:, 1], streamed.xy[5:, 1])


def test_offline_track_of_a_path_encodes_while_decoding(offline, tmp_path, monkeypatch):
    """`track(path)` on the offline engine feeds decoded batches into its stream, which
    encodes each on arrival and keeps features only: the same tracks as tracking the decoded
    clip, for late queries and backward tracking too, and no whole-clip decode."""
    from pointtrack.trackers import base
    from pointtrack.video import read_clip

    path = write_video(tmp_path / "walk.mp4", make_video(19, 64, 48, seed=4), fps=10.0)
    q = np.array([[0, 10.0, 10.0], [6, 40.0, 30.0], [18, 60.0, 40.0]])
    decoded = read_clip(path, size=offline.input_size)
    whole = offline.track(decoded, queries=q, backward_tracking=True)
    # Batches of 5 against encoder chunks of 2 (CPU): frames wait between feeds.
    monkeypatch.setattr(base, "STREAM_BATCH_FRAMES", 5)
    calls = []
    monkeypatch.setattr(base, "read_clip", lambda *a, **k: calls.append(a) or read_clip(*a, **k))
    streamed = offline.track(path, queries=q, backward_tracking=True)
    assert not calls and streamed.equals(whole)
    assert streamed.fps == 10.0 and streamed.frame_size == (64, 48)
    forward = offline.track(path, grid_size=3, grid_query_frame=4)
    assert not calls and forward.equals(offline.track(decoded, grid_size=3, grid_query_frame=4))
    with pytest.raises(PromptError, match="query frame 19"):
        offline.track(path, queries=[[19, 10.0, 10.0]])


def test_offline_stream_push_feed_finish(offline):
    """The offline stream, fed by hand: `push` gives the offline tracks of the frames so
    far, `finish` those of all of them; a frame buffer reused by the caller changes nothing;
    the prompt's frames must all come."""
    video = make_video(9, 64, 48, seed=5)
    q = np.array([[0, 8.0, 8.0], [3, 30.0, 20.0]])
    stream = offline.stream(queries=q)
    buffer = video[:5].copy()
    so_far = stream.push(buffer)  # 5 frames: 4 encoded, 1 waiting
    assert so_far.equals(offline.track(video[:5], queries=q))
    buffer[:] = 0  # reused for other frames: the waiting frame was copied
    stream.feed(video[5:6])
    stream.feed(video[6:])
    assert stream.finish().equals(offline.track(video, queries=q))
    with pytest.raises(RuntimeError, match="finished"):
        stream.feed(video[:1])
    late = offline.stream(queries=[[6, 8.0, 8.0]])
    late.feed(video[:4])
    with pytest.raises(PromptError, match="refers to frame 6"):
        late.finish()
    with pytest.raises(PromptError, match="no frames"):
        offline.stream(grid_size=2).finish()
    far = offline.stream(queries=[[10**12, 8.0, 8.0]])  # checked at the end, nothing allocated
    far.feed(video[:1])
    with pytest.raises(PromptError, match="refers to frame 1000000000000"):
        far.finish()


def test_stream_checks_frames_and_prompt(online):
    stream = online.stream(grid_size=3, grid_query_frame=4)
    assert stream.push(make_video(3, 32, 24)).num_frames == 0  # no window yet: nothing run
    with pytest.raises(PromptError, match="size changed"):
        stream.push(make_video(1, 30, 24))
    with pytest.raises(PromptError, match="frame 4"):
        stream.finish()
    with pytest.raises(PromptError, match="outside"):
        online.stream(queries=[[0, 40.0, 1.0]]).push(make_video(1, 32, 24))


# -- Checkpoints ------------------------------------------------------------------------------


@pytest.fixture
def hub_dir(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


def test_file_url_download_local_path_and_checkpoint_dir(offline_weights, tmp_path, hub_dir,
                                                         monkeypatch):
    path = tmp_path / "weights" / "scaled_offline.pth"
    path.parent.mkdir()
    torch.save(offline_weights, path)
    state = load_state_dict(path.as_uri(), "scaled_offline", progress=False)
    # Read in place: a local file never lands in the hub cache, where it could later stand in
    # for the registry checkpoint of the same name.
    assert not (hub_dir / "checkpoints" / "scaled_offline.pth").exists()
    assert torch.equal(state["fnet.conv1.weight"], offline_weights["fnet.conv1.weight"])
    model = load_weights(CoTracker3Offline(), str(path), "scaled_offline")
    assert torch.equal(model.corr_mlp.fc1.weight, offline_weights["corr_mlp.fc1.weight"])
    # A directory of checkpoints for machines without internet, used by registry name.
    monkeypatch.setenv("POINTTRACK_CHECKPOINT_DIR", str(path.parent))
    state = load_state_dict(None, "scaled_offline")
    assert torch.equal(state["time_emb"], offline_weights["time_emb"])
    # Training checkpoints wrap the weights in {"model": ...}.
    torch.save({"model": offline_weights}, tmp_path / "wrapped.pth")
    assert "time_emb" in load_state_dict(str(tmp_path / "wrapped.pth"), "scaled_offline")


def test_engine_weights_are_a_copy_in_their_precision(offline_weights):
    """The network built without storage takes a copy of each tensor in its precision: the
    caller's state dict stays theirs (changing it later changes no tracker)."""
    weights = {k: v.clone() for k, v in offline_weights.items()}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model = load_tracker("cotracker3-offline", checkpoint=weights, precision=precision).model
        fc1 = model.corr_mlp.fc1.weight
        assert fc1.dtype == dtype and not fc1.is_meta
        assert torch.equal(fc1, offline_weights["corr_mlp.fc1.weight"].to(dtype))
        weights["corr_mlp.fc1.weight"].add_(1.0)
        assert torch.equal(fc1, offline_weights["corr_mlp.fc1.weight"].to(dtype))
        weights["corr_mlp.fc1.weight"].copy_(offline_weights["corr_mlp.fc1.weight"])
        assert model.time_emb.dtype == dtype  # buffers too


def test_bad_keys_are_listed(offline_weights, tmp_path):
    state = dict(offline_weights)
    del state["corr_mlp.fc2.bias"]
    state["extra.weight"] = torch.zeros(3)
    state["time_emb"] = torch.zeros(1, 16, 1110)  # the online model's window
    with pytest.raises(CheckpointError) as e:
        load_weights(CoTracker3Offline(), state, "scaled_offline")
    message = str(e.value)
    assert "missing" in message and "corr_mlp.fc2.bias" in message
    assert "unexpected" in message and "extra.weight" in message
    assert "mis-shaped" in message and "time_emb (1, 16, 1110)" in message
    with pytest.raises(CheckpointError, match="neither a file"):
        load_state_dict("/no/such/file.pth", "scaled_offline")
    bad = tmp_path / "notes.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_state_dict(str(bad), "scaled_offline")


def test_engines_load_weights_without_a_random_init(offline_weights, online_weights, tmp_path):
    """An engine builds its network on the meta device and takes a copy of the checkpoint's
    tensors: no random init to overwrite, and none of the Python references that import sympy
    (1-2 s of a first call). Run in a fresh process, where nothing has imported sympy yet."""
    import subprocess
    import sys

    for name, weights in (("offline", offline_weights), ("online", online_weights)):
        torch.save(weights, tmp_path / f"{name}.pth")
    code = f"""
import sys, torch
from pointtrack.trackers import load_tracker
initialised = []  # the device of every tensor the layers' inits see
for fn in ("kaiming_uniform_", "uniform_", "normal_", "ones_", "zeros_"):
    def spy(*args, _fn=getattr(torch.nn.init, fn), **kwargs):
        initialised.append((args[0] if args else kwargs["tensor"]).device.type)
        return _fn(*args, **kwargs)
    setattr(torch.nn.init, fn, spy)
for name in ("offline", "online"):
    weights = torch.load(r"{tmp_path}/" + name + ".pth", weights_only=True)
    model = load_tracker("cotracker3-" + name, checkpoint=r"{tmp_path}/" + name + ".pth",
                         precision="bf16").model
    state = model.state_dict()
    assert set(state) == set(weights)
    assert all(torch.equal(v, weights[k].to(v.dtype)) for k, v in state.items()), name
    assert not any(t.is_meta for t in state.values())
assert initialised and set(initialised) == {{"meta"}}, set(initialised)
print("sympy" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1:] == ["False"]
    # Built the ordinary way, the network keeps the official random init.
    model = CoTracker3Offline()
    assert 0.9 < model.updateformer.virual_tracks.std() < 1.1
    time = torch.arange(model.cfg.window_len, dtype=torch.float32)[:, None]
    assert torch.allclose(model.time_emb[0, :, 0:1], torch.sin(time))  # first frequency: 1


def test_offline_machine_error_names_url_cache_and_fix(hub_dir, monkeypatch):
    monkeypatch.delenv("POINTTRACK_CHECKPOINT_DIR", raising=False)
    url = "https://127.0.0.1:9/cotracker3/scaled_offline.pth"  # nothing listens there
    monkeypatch.setitem(CHECKPOINTS, "scaled_offline", url)
    tracker = load_tracker("cotracker3-offline")  # weights load on first use
    with pytest.raises(CheckpointError) as e:
        tracker.track(make_video(1, 16, 12), grid_size=1)
    message = str(e.value)
    assert url in message
    assert str(hub_dir / "checkpoints" / "scaled_offline.pth") in message
    assert "--checkpoint" in message and "POINTTRACK_CHECKPOINT_DIR" in message
    assert isinstance(e.value, RuntimeError)


def test_options_are_checked():
    with pytest.raises(ValueError, match="device"):
        load_tracker("cotracker3-offline", device="tpu")
    with pytest.raises(ValueError, match="iters"):
        load_tracker("cotracker3-online", iters=0)
    with pytest.raises(ValueError, match="precision"):
        load_tracker("cotracker3-online", precision="int8")


def test_reduced_precision_on_a_cpu_without_its_kernels_warns(offline_weights):
    """bf16 on a CPU without AVX-512 runs through oneDNN's reference code, many times slower
    than fp32 (165 s against 18 s for 24 frames x 100 points on a 2-core AVX2 EPYC): the
    engine warns, naming the CPU, where PyTorch reports no fast bf16 kernels."""
    import warnings

    assert fast_cpu_precision("fp32")
    for precision in ("bf16", "fp16"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load_tracker("cotracker3-offline", checkpoint=offline_weights, precision=precision)
        slow = [w for w in caught if "no fast" in str(w.message)]
        assert len(slow) == (0 if fast_cpu_precision(precision) else 1), precision
        for w in slow:
            assert torch.backends.cpu.get_cpu_capability() in str(w.message)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_tracker("cotracker3-offline", checkpoint=offline_weights)  # fp32: never
    assert not [w for w in caught if "no fast" in str(w.message)]


def test_bf16_is_close_to_fp32(offline_weights, offline):
    video = make_video(2, 32, 24)
    q = [[0, 10.0, 10.0], [1, 20.0, 5.0]]
    fp32 = offline.track(video, queries=q)
    bf16 = load_tracker("cotracker3-offline", checkpoint=offline_weights, precision="bf16")
    tracks = bf16.track(video, queries=q)
    assert tracks.xy.dtype == np.float32 and tracks.options["precision"] == "bf16"
    assert 0 < np.abs(tracks.xy - fp32.xy).max() < 2.0  # px of the 32x24 video
    # On CPU the bf16 CNN runs channels-last, its weights too (no per-call weight copies).
    convs = [m for m in bf16.model.fnet.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert not offline.model.fnet.conv2.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not fast_cpu_precision("bf16"),
                    reason="no fast bf16 kernels on this CPU: 34 bf16 frames take ~13 minutes "
                           "(tests/test_gpu.py checks the bf16 online stream on a GPU)")
def test_bf16_online_track_and_stream(online_weights):
    """bf16 converts the whole network: the online windows run and stay near fp32, and the
    stream gives `track`'s result. (Backward tracking runs the same windows on reversed
    frames: `test_online_track_of_a_path_decodes_while_tracking` checks it in fp32.)"""
    video = make_video(17, 32, 24)
    q = np.array([[4, 5.0, 5.0], [9, 20.0, 10.0]])
    fp32 = load_tracker("cotracker3-online", checkpoint=online_weights)
    bf16 = load_tracker("cotracker3-online", checkpoint=online_weights, precision="bf16")
    ref = fp32.track(video, queries=q)
    tracks = bf16.track(video, queries=q)
    assert tracks.xy.dtype == np.float32 and np.isfinite(tracks.xy).all()
    assert 0 < np.median(np.abs(tracks.xy - ref.xy)) < 2.0  # px of the 32x24 video
    stream = bf16.stream(queries=q)
    stream.push(video[:9])
    stream.push(video[9:])
    assert stream.finish().equals(tracks)


# -- CLI --------------------------------------------------------------------------------------


def test_cli_track_with_checkpoint_file(offline_weights, tmp_path, capsys):
    cli = pytest.importorskip("pointtrack.cli")
    try:
        import pointtrack.cli.track  # noqa: F401
    except ImportError:
        pytest.skip("the track command is not there yet")
    checkpoint = tmp_path / "synthetic_offline.pth"
    torch.save(offline_weights, checkpoint)
    video = tmp_path / "clip.mp4"
    write_video(video, make_video(3, 64, 48), fps=10)
    out = tmp_path / "clip.tracks.npz"
    code = cli.main(["track", str(video), "--engine", "cotracker3-offline", "--checkpoint",
                     str(checkpoint), "--device", "cpu", "--grid-size", "3", "--out", str(out)])
    assert code == 0
    tracks = Tracks.load(out)
    assert tracks.tracker == "cotracker3-offline"
    assert tracks.xy.shape == (3, 9, 2) and tracks.frame_size == (64, 48)
    # Grid points start inside the 64x48 source frame, on frame 0.
    assert (tracks.xy[0, :, 0] >= 0).all() and (tracks.xy[0, :, 0] <= 64).all()
    assert tracks.visible[0].all()
    assert tracks.options["compile"] is False  # the CNN compiles only when asked (--compile)
    code = cli.main(["track", str(video), "--engine", "cotracker3-offline", "--checkpoint",
                     str(tmp_path / "missing.pth"), "--grid-size", "3", "--out", str(out)])
    assert code == 2
    bf16_out = tmp_path / "bf16.tracks.npz"
    code = cli.main(["track", str(video), "--engine", "cotracker3-offline", "--checkpoint",
                     str(checkpoint), "--precision", "bf16", "--no-compile", "--grid-size", "3",
                     "--out", str(bf16_out)])
    options = Tracks.load(bf16_out).options
    assert code == 0 and options["precision"] == "bf16" and options["compile"] is False
    # On a CPU without fast bf16 kernels the CLI says so, in one line.
    err = capsys.readouterr().err
    slow = [line for line in err.splitlines() if "no fast bf16 kernels" in line]
    assert len(slow) == (0 if fast_cpu_precision("bf16") else 1)
    assert all(line.startswith("pointtrack: warning: precision=bf16") for line in slow)
    lk_out = tmp_path / "lk.tracks.npz"
    code = cli.main(["track", str(video), "--precision", "bf16", "--grid-size", "3",
                     "--out", str(lk_out)])
    assert code == 2 and not lk_out.exists()  # lk has no precision option


def test_add_norm_writes_sum_and_norms_into_strided_views():
    """The fused residual add + LayerNorm (PyTorch path here) lands a chunk of tracks in a
    frame-major buffer, with both norms, and leaves the rest of the buffer alone."""
    import torch.nn.functional as F

    from pointtrack.models.add_norm import add_norm

    g = torch.Generator().manual_seed(0)
    n, T, N, C = 5, 7, 9, 384
    x = torch.randn(n, T, C, generator=g) * 2 + 1
    y = torch.randn(n, T, C, generator=g)
    w, b = torch.randn(C, generator=g), torch.randn(C, generator=g)
    buffers = [torch.full((T, N, C), float("nan")) for _ in range(3)]
    views = [buf[:, 2 : 2 + n].transpose(0, 1) for buf in buffers]  # (n, T, C), strided
    add_norm(x, y, sum_to=views[0], norm_to=views[1], affine_to=views[2], weight=w, bias=b,
             eps=1e-6, affine_eps=1e-5)
    s = x + y
    torch.testing.assert_close(buffers[0][:, 2 : 2 + n], s.transpose(0, 1))
    n1 = (s - s.mean(-1, keepdim=True)) / (s.var(-1, unbiased=False, keepdim=True) + 1e-6).sqrt()
    torch.testing.assert_close(buffers[1][:, 2 : 2 + n], n1.transpose(0, 1), atol=1e-5, rtol=1e-5)
    n2 = F.layer_norm(s, (C,), w, b, eps=1e-5)
    torch.testing.assert_close(buffers[2][:, 2 : 2 + n], n2.transpose(0, 1))
    for buf in buffers:
        assert torch.isnan(buf[:, :2]).all() and torch.isnan(buf[:, 2 + n :]).all()
    # In place: the sum replaces x.
    before = x.clone()
    add_norm(x, y, sum_to=x)
    torch.testing.assert_close(x, before + y)


def test_encoder_falls_back_to_eager_when_compiling_fails(monkeypatch):
    """A broken torch.compile toolchain costs a warning, not the run: the eager CNN gives the
    same features and compilation is not tried again."""
    from pointtrack.models.cotracker3 import CoTracker3Offline

    model = CoTracker3Offline().eval()
    video = torch.rand(1, 3, 3, 64, 96) * 255

    def broken(x):
        raise RuntimeError("no C compiler for Triton's launcher")

    with torch.inference_mode():
        expected = model.encode(video)
        monkeypatch.setattr(model, "_compiled_encoder", lambda video: broken)
        with pytest.warns(UserWarning, match="running it eagerly"):
            got = model.encode(video)
    assert model.cfg.compile_encoder is False
    for e, g in zip(expected, got, strict=True):
        assert torch.equal(e, g)


def test_kept_heap_changes_no_result_and_is_given_back(offline, monkeypatch):
    """CPU calls keep freed memory in glibc's heap while they run (no page faults per
    activation); the tracks are bit-identical without it, and the policy is undone after."""
    from pointtrack.trackers.cotracker import kept_heap

    video = make_video(10, 96, 64, seed=3)
    queries = np.array([[0, 20.0, 30.0], [4, 50.0, 25.0]])
    monkeypatch.delenv("POINTTRACK_KEEP_HEAP", raising=False)
    if kept_heap.libc is not None:  # glibc here: calls count in, and the last one out undoes
        with kept_heap(), kept_heap():
            assert kept_heap.users == 2
        assert kept_heap.users == 0
    kept = offline.track(video, queries=queries)
    assert kept_heap.users == 0  # back to glibc's own thresholds, free memory trimmed
    monkeypatch.setenv("POINTTRACK_KEEP_HEAP", "0")
    plain = offline.track(video, queries=queries)
    assert np.array_equal(kept.xy, plain.xy) and np.array_equal(kept.visible, plain.visible)


# -- CPU fast paths: each is checked against an exact or fp32 reference ------------------------


def test_patches_are_bilinear_samples_with_border_padding():
    """`sample_patches` (whole-row gathers, then two lerps) equals grid_sample on every patch
    pixel, inside the map and past its borders, for one and for two videos."""
    import torch.nn.functional as F

    from pointtrack.models.cotracker3 import sample_patches

    g = torch.Generator().manual_seed(0)
    B, T, H, W, C, r = 2, 3, 9, 11, 5, 2
    fmaps = torch.randn(B, T, H, W, C, generator=g, dtype=torch.float64)
    xy = torch.rand(B, 4, T, 2, generator=g, dtype=torch.float64) * torch.tensor([W + 6, H + 6]) - 3
    frames = torch.arange(T).expand(B, 4, T)
    offsets = torch.arange(-r, r + 1, dtype=torch.float64)
    # (x slowest, then y), as the correlation MLP reads them
    grid = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), -1).reshape(-1, 2)
    for b in (slice(0, 1), slice(0, 2)):
        got = sample_patches(fmaps[b], xy[b], frames[b], r)  # (B, n, T, P*P, C)
        points = xy[b][..., None, :] + grid  # (B, n, T, P*P, 2)
        maps = fmaps[b].permute(0, 1, 4, 2, 3)  # (B, T, C, H, W)
        norm = points / torch.tensor([W - 1, H - 1]) * 2 - 1
        for t in range(T):
            want = F.grid_sample(maps[:, t], norm[:, :, t], align_corners=True,
                                 padding_mode="border")  # (B, C, n, P*P)
            torch.testing.assert_close(got[:, :, t], want.permute(0, 2, 3, 1))


def test_cpu_bf16_encoder_runs_channels_last_and_stays_near_fp32(monkeypatch):
    """In bf16 on CPU the CNN keeps the channels-last layout (its norms run as group norms)
    and lands as close to fp32 as the channels-first path; fp32 never takes that path."""
    import copy

    import torch.nn.functional as F

    from pointtrack.models import cotracker3 as m

    torch.manual_seed(0)
    encoder = m.FeatureEncoder().eval()
    x = torch.rand(2, 3, 96, 128) * 2 - 1
    with torch.inference_mode():
        reference = encoder(x)
        bf16 = copy.deepcopy(encoder).to(torch.bfloat16)
        fast = bf16(x.bfloat16().contiguous(memory_format=torch.channels_last))
        def channels_first(norm, x, relu=False, skip=None):  # PyTorch's own instance norm
            y = F.relu(norm(x)) if relu else norm(x)
            return y if skip is None else F.relu(y + skip)

        monkeypatch.setattr(m, "instance_norm", channels_first)
        plain = bf16(x.bfloat16().contiguous())
        monkeypatch.undo()
        assert fast.is_contiguous(memory_format=torch.channels_last)
        assert not plain.is_contiguous(memory_format=torch.channels_last)
        err_fast = (fast.float() - reference).abs().mean() / reference.abs().mean()
        err_plain = (plain.float() - reference).abs().mean() / reference.abs().mean()
        assert err_fast < 0.05 and err_fast < 1.5 * err_plain

        def no_group_norm(*args, **kwargs):
            raise AssertionError("fp32 must keep PyTorch's instance norm")

        monkeypatch.setattr(F, "group_norm", no_group_norm)
        fp32 = encoder(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(fp32, reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("size", [(24, 32), (12, 16), (48, 64)])
def test_cpu_bf16_norm_keeps_channels_last_on_small_and_large_maps(size):
    """The CNN's norm in bf16 on CPU: small maps (a channels-first group norm, the
    channels-last kernel being slow there) and large ones (channels-last) alike return
    channels-last maps with the instance norm's values."""
    from pointtrack.models import cotracker3 as m

    torch.manual_seed(0)
    x = (torch.randn(2, 128, *size) * 3 + 1).bfloat16().contiguous(
        memory_format=torch.channels_last)
    norm = torch.nn.InstanceNorm2d(128)
    with torch.inference_mode():
        got = m.instance_norm(norm, x)
    assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=torch.channels_last)
    want = torch.nn.functional.instance_norm(x.float())
    assert (got.float() - want).abs().max() < 0.03  # bf16 rounding of values up to ~4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_cpu_relu_on_the_bits_equals_pytorchs(dtype):
    """The CNN's ReLU on CPU (16-bit floats: an int16 clamp of their bits) is in place and
    gives PyTorch's values for every finite and infinite value, subnormals and signed zeros
    included, on channels-last and on strided tensors."""
    from pointtrack.models import cotracker3 as m

    torch.manual_seed(0)
    info = torch.finfo(dtype)
    special = [0.0, -0.0, info.tiny / 4, -info.tiny / 4, info.max, -info.max,
               float("inf"), float("-inf"), 1.0, -1.0]
    values = torch.randn(2 * 8 * 16 * 16) * 100
    values[: len(special)] = torch.tensor(special)
    x = values.to(dtype).reshape(2, 16, 16, 8).permute(0, 3, 1, 2)  # channels-last
    assert x.is_contiguous(memory_format=torch.channels_last)
    for view in (lambda t: t, lambda t: t[:, ::2, 1:, :-3]):
        want = torch.nn.functional.relu(view(x))
        y = x.clone()
        got = view(y)
        assert m.relu_(got) is got
        assert torch.equal(got, want)  # -0.0 == 0.0 here: the sign of a zero may differ
        assert not (got < 0).any()
        outside, base = y.clone(), x.clone()
        view(outside).zero_(), view(base).zero_()
        assert torch.equal(outside, base)  # nothing outside the view changed
    if dtype != torch.float32:  # where autograd records, PyTorch's op (it has a gradient)
        w = torch.randn(10, dtype=dtype, requires_grad=True)
        m.relu_(w * 1).sum().backward()
        assert torch.equal(w.grad, (w > 0).to(dtype))


def test_cpu_bf16_mlp_gelu_in_the_epilogue_is_nearer_fp32(monkeypatch):
    """oneDNN's linear with the GELU in its epilogue (bf16 on CPU, inference) is at least as
    close to fp32 as the separate GELU; without the op, the separate GELU runs."""
    from pointtrack.models import cotracker3 as m

    if not m._onednn_linear_gelu():
        pytest.skip("this PyTorch has no oneDNN linear with a GELU epilogue")
    torch.manual_seed(0)
    for approximate in ("none", "tanh"):
        mlp = m.Mlp(64, 256, approximate=approximate).eval()
        x = torch.randn(500, 64)
        with torch.inference_mode():
            reference = mlp.hidden(x)
            mlp = mlp.to(torch.bfloat16)
            fused = mlp.hidden(x.bfloat16())
            monkeypatch.setattr(m, "_onednn_linear_gelu", lambda: False)
            separate = mlp.hidden(x.bfloat16())
            monkeypatch.undo()
        err_fused = (fused.float() - reference).abs().mean()
        err_separate = (separate.float() - reference).abs().mean()
        assert not torch.equal(fused, separate)  # two paths really ran
        assert err_fused <= err_separate * 1.05 and err_fused < 1e-2
    # With gradients on (fine-tuning), the differentiable path runs: the op has no gradient.
    mlp = m.Mlp(64, 256, approximate="tanh").to(torch.bfloat16)
    mlp.hidden(torch.randn(8, 64).bfloat16()).float().sum().backward()
    assert mlp.fc1.weight.grad is not None and mlp.fc1.weight.grad.abs().sum() > 0


def test_fused_norm_check_never_breaks_a_compiled_encoder_graph(monkeypatch):
    """Inside torch.compile the encoder keeps PyTorch's ops, and deciding so must not break
    the graph. It once did on GPU: the check's Triton lookup broke the graph, ran eagerly
    (not compiling, so "use the kernel"), and the traced kernel's variants hit Dynamo's
    recompile limit, leaving the "compiled" encoder partly eager. Here the GPU's answer is
    stood in for by a call Dynamo cannot trace (ctypes)."""
    import ctypes

    from pointtrack.models import corr_triton, norm_act
    from pointtrack.models.cotracker3 import ResidualBlock

    def on_a_gpu(t):
        return ctypes.c_int(1).value == 1

    torch.manual_seed(0)
    block = ResidualBlock(8, 16, stride=2).bfloat16().eval()
    x = torch.rand(2, 8, 16, 16).bfloat16()
    with torch.no_grad():
        expected = block(x)
        monkeypatch.setattr(norm_act, "ENABLED", True)
        monkeypatch.setattr(corr_triton, "available", on_a_gpu)
        assert norm_act.available(x)  # outside compile the kernel would be chosen
        torch._dynamo.reset()
        compiled = torch.compile(block, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("source_size", [(854, 480), (1920, 1080), (300, 777), (512, 384)])
def test_source_pixels_equal_the_clips_conversion_bit_for_bit(source_size):
    """Tracks are taken to source pixels through torch's CPU kernels (NumPy's broadcast over
    the (x, y) pair costs a dense grid milliseconds): the same float32 operations as
    `Clip.to_source_pixels`, so the same values exactly."""
    from pointtrack.trackers.cotracker import _Geometry, _source_pixels
    from pointtrack.video import Clip

    rng = np.random.default_rng(sum(source_size))
    clip = Clip(np.zeros((3, 384, 512, 3), np.uint8), np.arange(3), 30.0, source_size)
    xy = (rng.random((3, 1001, 2), dtype=np.float32) * 700 - 100)  # some off the frame
    to_frame = _Geometry(clip.size).to_frame
    out = _source_pixels(xy, to_frame, clip.scale)
    expected = clip.to_source_pixels(xy * to_frame, np.float32)
    assert out.dtype == np.float32 and out.shape == xy.shape
    assert np.array_equal(out, expected)
    assert not np.shares_memory(out, xy)
