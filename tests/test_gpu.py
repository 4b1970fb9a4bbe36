"""GPU paths: the fused correlation kernel and CUDA-graph replays against the plain PyTorch
path. Skipped where no CUDA device is present (CI); run on a GPU machine with
``python -m pytest tests/test_gpu.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pointtrack.models import _corr_cuda, corr_triton
from pointtrack.models.cotracker3 import CoTracker3Offline, CoTracker3Online, blend, gather_windows
from pointtrack.trackers import load_tracker

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _random_case(dtype, n=70, T=9, H=96, W=128, C=128, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    pyramid = []
    for level in range(4):
        f = torch.randn(T, H >> level, W >> level, C, device="cuda", generator=g)
        pyramid.append((f / f.norm(dim=-1, keepdim=True)).to(dtype))
    support = [torch.randn(n, 49, C, device="cuda", generator=g).to(dtype) for _ in range(4)]
    # Some positions off the map on every side: the border must repeat.
    scale = torch.tensor([W + 16.0, H + 16.0], device="cuda")
    xy = torch.rand(n, T, 2, device="cuda", generator=g) * scale - 8
    return pyramid, support, xy


def _float64_volumes(pyramid, support, xy):
    """Each level's correlation volumes ``(n, T, 2401)`` in float64: blended patches dotted
    with the query patches."""
    n, T = xy.shape[:2]
    frames = torch.arange(T, device="cuda").expand(1, n, T)
    for level in range(4):
        at = xy[None].double() / 2**level
        window = gather_windows(pyramid[level][None].double(), at, frames, 3)
        patch = blend(window, at).reshape(n, T, 49, -1)
        yield torch.einsum("ntpc,nqc->ntpq", patch, support[level].double()).reshape(n, T, -1)


@pytest.mark.parametrize("dtype,tol,cuda_kernel,T", [
    (torch.float32, 1e-5, False, 9),
    (torch.bfloat16, 1e-2, False, 9),
    (torch.bfloat16, 1e-2, True, 9),
    (torch.bfloat16, 1e-2, True, 37),  # blocks of 16 frames, the last one short
])
def test_fused_correlation_matches_float64_reference(dtype, tol, cuda_kernel, T, monkeypatch):
    monkeypatch.setattr(corr_triton, "CUDA_KERNEL", cuda_kernel)
    if cuda_kernel:  # the GPUs these tests run on have bf16 tensor cores
        assert _corr_cuda.kernel(torch.device("cuda")) is not None
    pyramid, support, xy = _random_case(dtype, T=T)
    out = corr_triton.correlate_volumes(pyramid, xy, support)
    for level, ref in enumerate(_float64_volumes(pyramid, support, xy)):
        got = out[:, :, level, :2401].double()
        assert torch.isfinite(got).all()
        assert float((got - ref).norm() / ref.norm()) < tol
        assert torch.all(out[:, :, level, 2401:] == 0)  # GEMM padding


def test_cuda_correlation_kernel_is_closer_to_float64_than_triton(monkeypatch):
    """Blending the fp32 products (the CUDA kernel) rounds once, where blending bf16 features
    before the product (the Triton kernel) rounds the blended patch too."""
    pyramid, support, xy = _random_case(torch.bfloat16, T=20, seed=1)
    volumes = {}
    for cuda_kernel in (True, False):
        monkeypatch.setattr(corr_triton, "CUDA_KERNEL", cuda_kernel)
        volumes[cuda_kernel] = corr_triton.correlate_volumes(pyramid, xy, support)
    for level, ref in enumerate(_float64_volumes(pyramid, support, xy)):
        error = {k: float((v[:, :, level, :2401].double() - ref).norm() / ref.norm())
                 for k, v in volumes.items()}
        assert error[True] <= error[False], error


@pytest.mark.parametrize("T,frames_per_block,warps", [(37, 16, 4), (82, 32, 4), (16, 32, 8),
                                                      (3, 32, 4)])
def test_paired_cuda_kernel_writes_the_single_warp_volumes_bit_for_bit(T, frames_per_block,
                                                                       warps):
    """A frame on two warps (half the query columns each, the window shared) sums the same
    products in the same order as on one warp: the volumes are equal, padding included, for
    blocks of frames that end short and pairs that get no frame."""
    pyramid, support, xy = _random_case(torch.bfloat16, T=T, seed=2)
    volumes = []
    for paired in (False, True):
        out = torch.full((xy.shape[0], T, 4, corr_triton.ROW), float("nan"), device="cuda",
                         dtype=torch.bfloat16)
        assert _corr_cuda.correlate_volumes(pyramid, xy.contiguous(), support, out, warps,
                                            frames_per_block, paired)
        volumes.append(out)
    assert torch.isfinite(volumes[1].float()).all()
    assert torch.equal(volumes[0], volumes[1])


def _weights(model_class):
    from pointtrack.models.weights import synthetic_state_dict

    shapes = {k: list(v.shape) for k, v in model_class().state_dict().items()}
    return synthetic_state_dict(shapes, seed=0)


def _video(T=20, w=96, h=72, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h // 4 + 4, w // 4 + T + 4, 3)).astype(np.uint8)
    big = np.kron(base, np.ones((4, 4, 1), np.uint8))
    return np.stack([big[:h, t : t + w] for t in range(T)])


@pytest.mark.parametrize("name,cls", [("cotracker3-offline", CoTracker3Offline),
                                      ("cotracker3-online", CoTracker3Online)])
def test_gpu_paths_match_cpu_fp32(name, cls):
    """CUDA (fused kernel, CUDA graphs) in fp32 gives the CPU's tracks."""
    weights = _weights(cls)
    video = _video()
    q = [[0, 10.0, 10.0], [3, 50.0, 30.0], [12, 70.0, 60.0]]
    cpu = load_tracker(name, checkpoint=weights).track(video, queries=q, grid_size=0)
    gpu_tracker = load_tracker(name, checkpoint=weights, device="cuda")
    before = {k: v.clone() for k, v in gpu_tracker.model.state_dict().items()}
    gpu = gpu_tracker.track(video, queries=q)
    again = gpu_tracker.track(video, queries=q)  # graphs captured on earlier calls replay
    assert np.abs(gpu.xy - cpu.xy).max() < 0.05
    assert (gpu.visible == cpu.visible).mean() > 0.99
    assert np.array_equal(gpu.xy, again.xy)
    for k, v in gpu_tracker.model.state_dict().items():  # in-place updates never touch weights
        assert torch.equal(v, before[k]), k


def test_online_stream_with_graphs_equals_track_bf16():
    weights = _weights(CoTracker3Online)
    video = _video(T=41)
    tracker = load_tracker("cotracker3-online", checkpoint=weights, device="cuda",
                           precision="bf16")
    whole = tracker.track(video, grid_size=5)
    stream = tracker.stream(grid_size=5)
    for a in range(0, len(video), 7):
        stream.push(video[a : a + 7])
    assert stream.finish().equals(whole)
    eager = load_tracker("cotracker3-online", checkpoint=weights, device="cuda",
                         precision="bf16")
    eager.model.cfg.cuda_graphs = False
    plain = eager.track(video, grid_size=5)
    assert np.abs(plain.xy - whole.xy).max() < 0.5


def test_online_capture_is_reused_by_later_videos_of_as_many_points():
    """A video tracked after another with as many points replays the first one's CUDA graph
    from its first window (no eager window, no capture); streams alive at once get their own;
    a new number of points drops the old capture."""
    weights = _weights(CoTracker3Online)
    video = _video(T=41)
    tracker = load_tracker("cotracker3-online", checkpoint=weights, device="cuda",
                           precision="bf16")
    first = tracker.track(video, grid_size=5)
    pool = tracker.model._captures
    assert len(pool) == 1 and pool[0].graph is not None and pool[0].owner() is None
    graph, calls = pool[0].graph, pool[0].calls
    again = tracker.track(video[::-1].copy(), grid_size=5)  # another video, as many points
    assert pool[0].graph is graph and pool[0].calls == calls  # replayed, not recaptured
    fresh = load_tracker("cotracker3-online", checkpoint=weights, device="cuda",
                         precision="bf16")
    expected = fresh.track(video[::-1].copy(), grid_size=5)  # eager first window, capture
    assert np.abs(again.xy - expected.xy).max() < 1e-3
    assert (again.visible == expected.visible).all()

    one, two = tracker.stream(grid_size=5), tracker.stream(grid_size=5)
    for a in range(0, len(video), 8):
        one.push(video[a : a + 8])
        two.push(video[::-1][a : a + 8])
    assert len(pool) == 2  # both alive: two captures
    assert np.abs(one.finish().xy - first.xy).max() < 1e-3
    assert np.abs(two.finish().xy - expected.xy).max() < 1e-3
    key = pool[0].pool_key
    del one, two
    tracker.track(video, grid_size=4)  # other shape: the old captures go
    assert len(pool) == 1 and pool[0].pool_key != key


def test_offline_path_encoded_while_decoding_equals_decoded_clip_bf16(tmp_path):
    """`track(path)` offline on the GPU: batches encoded as they are decoded (pinned staging
    buffers reused from feed to feed, the compiled encoder's padded last chunk) give the
    tracks of the decoded clip, forward and backward."""
    from pointtrack.video import read_clip, write_video

    path = write_video(tmp_path / "clip.mp4", _video(T=45), fps=15.0)
    tracker = load_tracker("cotracker3-offline", checkpoint=_weights(CoTracker3Offline),
                           device="cuda", precision="bf16", compile=True)
    clip = read_clip(path, size=tracker.input_size)
    q = np.array([[0, 20.0, 20.0], [30, 60.0, 40.0]])
    for kwargs in (dict(grid_size=6), dict(queries=q, backward_tracking=True)):
        assert tracker.track(path, **kwargs).equals(tracker.track(clip, **kwargs))
    assert "fnet" in tracker.model.__dict__["_compiled"]  # compile=True took the compiled CNN
    assert tracker.model.cfg.cudnn_benchmark  # and cuDNN's autotuner with it


def test_encoder_is_not_compiled_unless_asked():
    """Compiling the CNN costs 12-35 s per process for ~0.4 ms a frame, and cuDNN's
    autotuner 0.3-0.6 s per new video length for no gain with the eager CNN: both off by
    default."""
    tracker = load_tracker("cotracker3-offline", checkpoint=_weights(CoTracker3Offline),
                           device="cuda", precision="bf16", progress=False)
    tracker.track(_video(T=20), grid_size=4)
    assert tracker.options["compile"] is False
    assert "fnet" not in tracker.model.__dict__.get("_compiled", {})
    assert not tracker.model.cfg.cudnn_benchmark  # 0.3-0.6 s at each new length, no gain


def test_loading_the_weights_preloads_the_triton_kernels_on_a_thread():
    """A fresh process's first kernel launch would import Triton and hash Triton's files
    (~0.7 s on an H200's host): the engine starts both on a thread when it loads its weights,
    before any frame is tracked."""
    import subprocess
    import sys

    code = """
import sys, threading, time
import torch
from pointtrack.models.cotracker3 import CoTracker3Offline
from pointtrack.trackers import load_tracker
tracker = load_tracker("cotracker3-offline", checkpoint=CoTracker3Offline().state_dict(),
                       device="cuda", precision="bf16", progress=False)
assert "pointtrack.models._corr_kernel" not in sys.modules
tracker.model
names = ["pointtrack.models._" + m for m in ("corr_kernel", "attention_kernel", "add_norm_kernel")]
deadline = time.monotonic() + 120  # nothing is tracked: only the thread can import them
while not all(n in sys.modules for n in names) and time.monotonic() < deadline:
    time.sleep(0.05)
for t in threading.enumerate():
    if t.name == "pointtrack-triton":
        t.join()
from pointtrack.models import _corr_cuda  # the thread compiled the CUDA kernel too
arch = "sm_%d%d" % torch.cuda.get_device_capability()
key = (arch, _corr_cuda.WARPS, bool(_corr_cuda.PAIRED))
print(all(n in sys.modules for n in names) and isinstance(_corr_cuda._cubins.get(key), bytes))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[-1:] == ["True"]


def test_cuda_kernel_is_compiled_once_and_then_read_from_the_disk_cache(tmp_path):
    """NVRTC takes ~0.6 s a process: the cubin is kept on disk, and a later process whose
    compiler is taken away still gets the kernel."""
    import os
    import subprocess
    import sys

    code = """
import sys, torch
from pointtrack.models import _corr_cuda
if sys.argv[1] == "cached":
    def refuse(*args):
        raise AssertionError("compiled again")
    _corr_cuda._Library._compile = refuse
print(_corr_cuda.kernel(torch.device("cuda")) is not None)
"""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    for run in ("fresh", "cached"):
        out = subprocess.run([sys.executable, "-c", code, run], capture_output=True, text=True,
                             env=env, check=True).stdout.split()
        assert out[-1:] == ["True"], run
        assert len(list((tmp_path / "pointtrack" / "kernels").glob("*.cubin"))) == 1


def test_fused_encoder_norms_are_as_close_to_fp32_as_eager_bf16(monkeypatch):
    """`norm_act` (on unless POINTTRACK_FUSED_ENCODER=0) rounds once where the eager ops round
    after the norm, the ReLU and the add: its features must be no further from fp32's."""
    import copy

    from pointtrack.models import norm_act

    model = CoTracker3Offline()
    model.load_state_dict(_weights(CoTracker3Offline))
    fnet = model.fnet.cuda().eval()
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.rand(4, 3, 384, 512, device="cuda", generator=g) * 2 - 1
    with torch.no_grad():
        reference = fnet(x)
        fnet16 = copy.deepcopy(fnet).bfloat16()
        monkeypatch.setattr(norm_act, "ENABLED", False)
        assert not norm_act.available(x.bfloat16())
        eager = fnet16(x.bfloat16()).float()
        monkeypatch.setattr(norm_act, "ENABLED", True)
        assert norm_act.available(x.bfloat16())
        fused = fnet16(x.bfloat16()).float()
    assert not torch.equal(fused, eager)  # the kernel really ran
    error = {name: float((v - reference).abs().mean()) for name, v in
             (("fused", fused), ("eager", eager))}
    assert error["fused"] <= 1.05 * error["eager"], error


def test_channels_first_stem_takes_the_fused_norm(monkeypatch):
    """Frames reach the encoder channels-last (permuted from (T, H, W, 3)); with
    `gpu_stem_channels_first` the stem's norm runs in `norm_act` too (one more call) and the
    features stay as close to fp32's."""
    from pointtrack.models import norm_act

    model = CoTracker3Offline()
    model.load_state_dict(_weights(CoTracker3Offline))
    model = model.cuda().eval()
    g = torch.Generator(device="cuda").manual_seed(0)
    video = (torch.rand(1, 4, 384, 512, 3, device="cuda", generator=g) * 255).round()
    video = video.permute(0, 1, 4, 2, 3)  # (B, T, 3, H, W), channels-last as the engines pass it
    calls = []
    fused = norm_act.norm_act
    monkeypatch.setattr(norm_act, "norm_act", lambda *a, **k: calls.append(1) or fused(*a, **k))
    with torch.inference_mode():
        reference = model.encode(video)
        model.bfloat16()
        out = {}
        for first in (False, True):
            model.cfg.gpu_stem_channels_first = first
            calls.clear()
            out[first] = model.encode(video)
            out[first, "calls"] = len(calls)
    assert out[True, "calls"] == out[False, "calls"] + 1
    error = [float((a.float() - b).abs().mean()) for first in (False, True)
             for a, b in zip(out[first][:1], reference[:1], strict=True)]
    assert error[1] <= 1.05 * error[0], error


def test_fused_bf16_tracks_match_pytorch_path(monkeypatch):
    weights = _weights(CoTracker3Offline)
    video = _video()
    tracker = load_tracker("cotracker3-offline", checkpoint=weights, device="cuda",
                           precision="bf16")
    fused = tracker.track(video, grid_size=6)
    monkeypatch.setattr(corr_triton, "ENABLED", False)
    plain = tracker.track(video, grid_size=6)
    assert not np.array_equal(fused.xy, plain.xy)  # the two paths really ran
    assert np.median(np.linalg.norm(fused.xy - plain.xy, axis=-1)) < 1.0
    assert (fused.visible == plain.visible).mean() > 0.95


@pytest.mark.parametrize("name,cls", [("cotracker3-offline", CoTracker3Offline),
                                      ("cotracker3-online", CoTracker3Online)])
def test_fp16_autocast_runs_near_fp32(name, cls):
    weights = _weights(cls)
    video = _video()
    fp32 = load_tracker(name, checkpoint=weights, device="cuda").track(video, grid_size=5)
    fp16 = load_tracker(name, checkpoint=weights, device="cuda", precision="fp16")
    tracks = fp16.track(video, grid_size=5)
    assert np.isfinite(tracks.xy).all()
    assert np.median(np.linalg.norm(tracks.xy - fp32.xy, axis=-1)) < 1.0


def test_add_norm_kernel_matches_float64_reference():
    """The fused residual add + LayerNorm writes the sum and both norms into strided views
    (a chunk of tracks landing in a frame-major buffer), as float64 PyTorch would."""
    from pointtrack.models.add_norm import add_norm

    g = torch.Generator(device="cuda").manual_seed(0)
    n, T, N, C = 37, 11, 50, 384
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2)):
        x = torch.randn(n, T, C, device="cuda", generator=g).to(dtype) * 3 + 1
        y = torch.randn(n, T, C, device="cuda", generator=g).to(dtype)
        w = torch.randn(C, device="cuda", generator=g).to(dtype)
        b = torch.randn(C, device="cuda", generator=g).to(dtype)
        buffers = [torch.full((T, N, C), float("nan"), device="cuda", dtype=dtype)
                   for _ in range(3)]
        views = [buf[:, 5 : 5 + n].transpose(0, 1) for buf in buffers]
        add_norm(x, y, sum_to=views[0], norm_to=views[1], affine_to=views[2], weight=w, bias=b,
                 eps=1e-6, affine_eps=1e-5)
        s = x.double() + y.double()
        refs = [s, F.layer_norm(s, (C,), eps=1e-6),
                F.layer_norm(s, (C,), w.double(), b.double(), eps=1e-5)]
        for view, ref in zip(views, refs, strict=True):
            assert float((view.double() - ref).norm() / ref.norm()) < tol
        for buf in buffers:  # only the chunk's rows were written
            assert torch.isnan(buf[:, :5]).all() and torch.isnan(buf[:, 5 + n :]).all()
        # In place, with the norm of the stored sum.
        h = torch.empty_like(x)
        expected = F.layer_norm((x + y).double(), (C,), eps=1e-6)
        add_norm(x, y, sum_to=x, norm_to=h)
        assert float((x.double() - s).norm() / s.norm()) < tol
        assert float((h.double() - expected).norm() / expected.norm()) < tol


def test_compiled_encoder_is_as_close_to_fp32_as_eager_bf16():
    model = CoTracker3Offline().cuda().eval()
    model.load_state_dict(_weights(CoTracker3Offline))
    video = torch.from_numpy(_video(T=11, w=512, h=384)).cuda().permute(0, 3, 1, 2)[None].float()
    with torch.inference_mode():
        ref = model.encode(video)
        bf16 = CoTracker3Offline().cuda().eval()
        bf16.load_state_dict(model.state_dict())
        bf16 = bf16.bfloat16()
        bf16.cfg.compile_encoder = True  # opt-in (engines: compile=True)
        compiled = bf16.encode(video)  # 11 frames: a full chunk of 8 and a padded one
        assert "fnet" in bf16.__dict__["_compiled"]
        bf16.cfg.compile_encoder = False
        eager = bf16.encode(video)
    for r, c, e in zip(ref, compiled, eager, strict=True):
        assert c.shape == r.shape
        err_c = float((c.float() - r).norm() / r.norm())
        err_e = float((e.float() - r).norm() / r.norm())
        assert err_c < max(1.5 * err_e, 1e-2), (err_c, err_e)


def test_encoder_compiles_to_one_graph_with_the_fused_norms_on():
    """The fused-norm check is a constant inside torch.compile: no graph break, so the
    compiled encoder is compiled whole (a break once left it partly eager, session 19)."""
    from pointtrack.models import norm_act

    assert norm_act.ENABLED  # the default
    fnet = CoTracker3Offline().fnet.cuda().eval().bfloat16()
    x = torch.rand(2, 3, 384, 512, device="cuda").bfloat16()
    torch._dynamo.reset()
    with torch.inference_mode():
        out = torch.compile(fnet, dynamic=False, fullgraph=True)(x)
    assert out.shape == (2, 128, 96, 128)


def _sdpa_reference(q, kv):
    """fp32 SDPA of ``q (B, N, 384)`` over ``kv (B, M, 768)`` (keys, then values), 8 heads."""
    def heads(t):
        return t.float().reshape(t.shape[0], t.shape[1], 8, 48).transpose(1, 2)

    out = F.scaled_dot_product_attention(heads(q), heads(kv[..., :384]), heads(kv[..., 384:]))
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[1], 384)


@pytest.mark.parametrize("L", [1, 7, 16, 32, 33, 82, 128])
def test_short_attention_matches_sdpa(L):
    from pointtrack.models.attention import short_attention

    g = torch.Generator(device="cuda").manual_seed(L)
    B = 37  # not a multiple of the sequences per program
    q = torch.randn(B, L, 384, device="cuda", generator=g).bfloat16()
    kv = torch.randn(B, L, 768, device="cuda", generator=g).bfloat16()
    out = short_attention(q, kv, 8, 48)
    ref = _sdpa_reference(q, kv)
    assert out.shape == (B, L, 384) and out.dtype == torch.bfloat16
    assert float((out.float() - ref).abs().max()) < 3e-2
    assert float((out.float() - ref).norm() / ref.norm()) < 1e-2


@pytest.mark.parametrize("M", [64, 7])
def test_few_keys_attention_matches_sdpa(M):
    from pointtrack.models.attention import few_keys_attention

    g = torch.Generator(device="cuda").manual_seed(M)
    B, N = 3, 300  # N: not a multiple of the queries per program
    q = torch.randn(B, N, 384, device="cuda", generator=g).bfloat16()
    kv = torch.randn(B, M, 768, device="cuda", generator=g).bfloat16()
    out = few_keys_attention(q, kv, 8, 48)
    ref = _sdpa_reference(q, kv)
    assert out.shape == (B, N, 384) and out.dtype == torch.bfloat16
    assert float((out.float() - ref).abs().max()) < 3e-2
    assert float((out.float() - ref).norm() / ref.norm()) < 1e-2


def test_attention_kernels_launch_in_parts_past_the_grid_axis_limit():
    """Heads are the grids' first axis; sequences (and groups) the second (third), which
    CUDA caps at 65535 blocks: more go in further launches. With a single key per query,
    attention returns that key's value exactly, so every part is checked."""
    from pointtrack.models.attention import MAX_GRID_Y, few_keys_attention, short_attention

    g = torch.Generator(device="cuda").manual_seed(0)
    B = MAX_GRID_Y * 8 + 3  # sequences of one token: 8 a program, so two launches
    q = torch.randn(B, 1, 384, device="cuda", generator=g).bfloat16()
    kv = torch.randn(B, 1, 768, device="cuda", generator=g).bfloat16()
    assert torch.equal(short_attention(q, kv, 8, 48), kv[..., 384:])
    B = MAX_GRID_Y + 2
    q = torch.randn(B, 1, 384, device="cuda", generator=g).bfloat16()
    kv = torch.randn(B, 1, 768, device="cuda", generator=g).bfloat16()
    assert torch.equal(few_keys_attention(q, kv, 8, 48), kv[..., 384:])


def test_new_video_lengths_use_no_cudnn_attention():
    """cuDNN's SDPA builds a graph per new shape (0.3-2.4 s each on an H200): the transformer
    must not call it, whatever the video's length."""
    from torch.profiler import ProfilerActivity, profile

    tracker = load_tracker("cotracker3-offline", checkpoint=_weights(CoTracker3Offline),
                           device="cuda", precision="bf16", progress=False)
    # Over 128 frames and 128 points: the transformer's attention goes through SDPA (shorter
    # sequences and fewer keys take the Triton kernels of `attention`).
    tracker.track(_video(T=140), grid_size=12)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        tracker.track(_video(T=143), grid_size=12)
    names = {e.key for e in prof.key_averages()}
    assert "aten::scaled_dot_product_attention" in names  # the profile saw the transformer
    assert not any("cudnn_attention" in n for n in names), sorted(names)


def test_fp32_gpu_call_keeps_device_memory_small():
    """cuDNN's convolution autotuner tried workspaces of 55.9 GiB in fp32; it runs only in
    bf16 now, so an fp32 online call peaks near its working set."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    tracker = load_tracker("cotracker3-online", checkpoint=_weights(CoTracker3Online),
                           device="cuda", progress=False)
    tracker.track(_video(T=24), grid_size=10)
    assert torch.cuda.max_memory_allocated() < 4 * 2**30


def test_exact_gelu_mlp_takes_the_epilogue_within_bf16_rounding(monkeypatch):
    """The correlation MLP's exact GELU goes through cuBLAS's (tanh) epilogue in bf16: its
    output must move from the exact pass's and stay as close to a float64 reference."""
    from pointtrack.models import cotracker3

    torch.manual_seed(0)
    mlp = cotracker3.Mlp(corr_triton.ROW, 384).cuda().bfloat16()
    x = torch.randn(8192, corr_triton.ROW, device="cuda").bfloat16()
    reference = F.gelu(F.linear(x.double(), mlp.fc1.weight.double(), mlp.fc1.bias.double()))
    monkeypatch.setattr(cotracker3, "EXACT_GELU", True)
    exact = mlp.hidden(x)
    monkeypatch.setattr(cotracker3, "EXACT_GELU", False)
    fused = mlp.hidden(x)
    assert fused.dtype == exact.dtype == torch.bfloat16
    assert not torch.equal(fused, exact)  # the epilogue ran
    error = {k: (v.double() - reference).abs().mean().item()
             for k, v in (("exact", exact), ("fused", fused))}
    assert error["fused"] <= 1.1 * error["exact"], error


def test_eager_encoder_tail_matches_the_padded_compiled_chunk():
    """`eager_encoder_tail` (opt-in): 18 frames in compiled chunks of 16 leave a tail of 2,
    run eagerly instead of padded; its features round differently, its tracks stay within
    bf16 rounding of the padded chunk's."""
    tracker = load_tracker("cotracker3-offline", checkpoint=_weights(CoTracker3Offline),
                           device="cuda", precision="bf16", compile=True)
    video = _video(T=18)
    assert tracker.model.cfg.eager_encoder_tail == 0
    padded = tracker.track(video, grid_size=6)
    tracker.model.cfg.eager_encoder_tail = 4
    eager = tracker.track(video, grid_size=6)
    assert not np.array_equal(padded.xy, eager.xy)  # the tail took the eager CNN
    assert np.median(np.linalg.norm(padded.xy - eager.xy, axis=-1)) < 0.5
    assert (padded.visible == eager.visible).mean() > 0.97
