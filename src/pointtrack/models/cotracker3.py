"""CoTracker3 (Karaev et al., 2024), offline and online, written from the paper and checked
number by number against the official implementation.

The file reads top to bottom:

1. `CoTracker3Config`: the few numbers that define the network.
2. `FeatureEncoder`: the CNN that turns each frame into stride-4 features.
3. Sampling helpers: bilinear lookups of 7x7 patches at sub-pixel positions.
4. `UpdateFormer`: the transformer (attention along each track's time axis, then across
   tracks through a small set of learned "virtual tracks").
5. `CoTracker3`: the shared core: feature pyramid, query features, the 4D correlation and
   the iterative refinement of positions, visibility and confidence.
6. `CoTracker3Offline` (whole video at once) and `CoTracker3Online` (sliding windows whose
   state is carried in an `OnlineState`).

Coordinates at the API boundary are (x, y) pixels of the model resolution (W x H = 512 x 384)
and frames are float RGB in 0..255. Inside, positions are in feature-map pixels (divided by
the stride). Module and parameter names give the state-dict keys of the official checkpoints
(including their spelling), so `load_state_dict(strict=True)` takes them unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import warnings
import weakref
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import attention, corr_triton, norm_act
from .add_norm import add_norm


@dataclasses.dataclass
class CoTracker3Config:
    window_len: int = 60  # frames per window: 60 offline (interpolated to T), 16 online
    stride: int = 4  # feature map stride
    model_resolution: tuple[int, int] = (384, 512)  # (H, W) frames are resized to
    latent_dim: int = 128  # channels of the feature maps
    corr_levels: int = 4  # pyramid levels of the correlation
    corr_radius: int = 3  # patches are (2r+1) x (2r+1)
    hidden_size: int = 384  # transformer width
    num_heads: int = 8
    depth: int = 3  # time blocks, each followed by one space block
    mlp_ratio: float = 4.0
    num_virtual_tracks: int = 64
    num_freqs: int = 10  # sine frequencies of the motion encoding
    iters: int = 6  # refinement iterations
    encoder_chunk: int = 8  # frames per CNN batch (bounds activation memory, exact)
    corr_budget: int = 2**26  # elements of a correlation patch tensor (chunks over points)
    token_budget: int = 2**16  # tokens per transformer chunk (bounds activations, exact)
    attention_budget: int = 2**16  # context tokens per virtual-track attention (GPU: 2**19)
    cuda_graphs: bool = True  # online, on GPU: windows replay one captured CUDA graph
    # On GPU in bf16/fp16: torch.compile the CNN (fused norms; ~0.4 ms less per frame after
    # 12-35 s of compiling per process). Off unless asked for: see the engines' `compile`.
    compile_encoder: bool = False
    # cuDNN's attention builds a graph per new shape: 0.3-2.4 s for each new video length or
    # point count on an H200, against ~4% faster calls once built. Off: flash/efficient SDPA.
    cudnn_attention: bool = False
    # On GPU: cuDNN times its convolution algorithms once per shape (pays with the compiled
    # CNN; the engines turn it on with `compile`).
    cudnn_benchmark: bool = False
    # On CPU in bf16/fp16 the CNN runs channels-last: oneDNN's convolutions skip two layout
    # copies each and the resizes run 9x faster (encoder -20% on 2 cores). Not fp32: see
    # `instance_norm`.
    cpu_channels_last: bool = True
    # On GPU the frames reach the stem channels-last (permuted from (T, H, W, 3)), so cuDNN's
    # stem writes channels-last and its norm misses the fused kernel (`norm_act` takes
    # channels-first). True: a channels-first stem. Off until timed on a GPU (NOTES, s25).
    gpu_stem_channels_first: bool = False
    # With the compiled CNN: a last chunk of at most this many frames runs eagerly instead of
    # padded to the compiled shape (82 frames in chunks of 16 compute 96). Off: 2% off a 480p
    # call on an H200, but its bf16 tracks moved further from fp32 (benchmarks/NOTES.md).
    eager_encoder_tail: int = 0

    @property
    def patch(self) -> int:
        return 2 * self.corr_radius + 1

    @property
    def corr_dim(self) -> int:
        return 256  # output of the correlation MLP per level

    @property
    def input_dim(self) -> int:
        """Transformer input: visibility, confidence, correlations, motion encoding."""
        motion = 4 + 4 * 2 * self.num_freqs
        return 2 + self.corr_levels * self.corr_dim + motion


OFFLINE = CoTracker3Config(window_len=60)
ONLINE = CoTracker3Config(window_len=16)


# -- 2. Feature encoder -----------------------------------------------------------------------


class ResidualBlock(nn.Module):
    """Two 3x3 convs with instance norm; a strided 1x1 conv on the skip when downsampling."""

    def __init__(self, in_dim: int, dim: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, dim, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)
        self.norm1 = nn.InstanceNorm2d(dim)
        self.norm2 = nn.InstanceNorm2d(dim)
        self.downsample = None
        if stride != 1:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_dim, dim, 1, stride=stride), nn.InstanceNorm2d(dim)
            )

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(instance_norm(self.norm1, self.conv1(x), relu=True))
        if self.downsample is not None:
            x = instance_norm(self.downsample[1], self.downsample[0](x))
        return instance_norm(self.norm2, y, relu=True, skip=x)


def instance_norm(norm: nn.InstanceNorm2d, x: Tensor, relu: bool = False,
                  skip: Tensor | None = None) -> Tensor:
    """``norm(x)``, then ``relu`` of it if asked, then ``relu(that + skip)`` with ``skip``: in
    place where ``x`` is not needed again (on CPU every fresh activation costs memory traffic),
    or in one kernel (`norm_act`) where that is switched on.

    On CPU in bf16/fp16, a channels-last ``x`` stays channels-last.

    PyTorch's instance norm returns channels-first and is 2-5x slower on a channels-last CPU
    tensor; a group norm with one group per channel computes the same statistics in the
    tensor's own layout. Not in fp32: there it sums less exactly (~1e-5 relative), which
    costs the parity cases up to 1e-2 px. Not on GPU: not measured there.

    PyTorch 2.13's channels-last group norm is 15-20x slower on some small maps (24 x 32,
    the last stage: 4.4 ms against 0.24 ms for 2 frames x 128 channels); those few values
    take a channels-first group norm and come back channels-last (same statistics).
    """
    if norm_act.available(x) and (skip is None or skip.is_contiguous()):
        return norm_act.norm_act(x, norm.eps, relu, skip)
    if (x.device.type == "cpu" and x.dtype != torch.float32 and x.shape[1] > 1
            and x.is_contiguous(memory_format=torch.channels_last)):
        if x.shape[-2] * x.shape[-1] < 1024:
            y = F.group_norm(x.contiguous(), x.shape[1], eps=norm.eps)
            y = y.contiguous(memory_format=torch.channels_last)
        else:
            y = F.group_norm(x, x.shape[1], eps=norm.eps)
    else:
        y = norm(x)
    if relu:
        relu_(y)
    if skip is not None:
        relu_(y.add_(skip))
    return y


def relu_(x: Tensor) -> Tensor:
    """``F.relu_``; on CPU in bf16/fp16 as a clamp of the bits read as int16.

    PyTorch's CPU kernels compute a 16-bit float ReLU in fp32 and round back: 12 ms for 25M
    values on this project's 2-core VM, against 1 ms for the int16 clamp (the sign is the top
    bit, and a positive float's bits order as its value). The same values, except that -0.0
    becomes +0.0 and a NaN with its sign bit set becomes 0. Not where autograd records.
    """
    if (x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16)
            and not x.requires_grad):
        x.view(torch.int16).clamp_min_(0)
        return x
    return F.relu_(x)


class FeatureEncoder(nn.Module):
    """Frames ``(B, 3, H, W)`` in [-1, 1] -> features ``(B, C, H/4, W/4)``.

    A 7x7 stride-2 stem, four residual stages (strides 1, 2, 2, 2), all four stages resized to
    stride 4 and fused by a 3x3 and a 1x1 conv.
    """

    def __init__(self, out_dim: int = 128, stride: int = 4) -> None:
        super().__init__()
        self.stride = stride
        dims = [out_dim // 2, out_dim // 4 * 3, out_dim, out_dim]  # 64, 96, 128, 128
        self.conv1 = nn.Conv2d(3, dims[0], 7, stride=2, padding=3)
        self.norm1 = nn.InstanceNorm2d(dims[0])
        in_dim = dims[0]
        for i, (dim, s) in enumerate(zip(dims, (1, 2, 2, 2), strict=True)):
            layer = nn.Sequential(ResidualBlock(in_dim, dim, s), ResidualBlock(dim, dim))
            self.add_module(f"layer{i + 1}", layer)
            in_dim = dim
        self.conv2 = nn.Conv2d(sum(dims), out_dim * 2, 3, padding=1)
        self.norm2 = nn.InstanceNorm2d(out_dim * 2)
        self.conv3 = nn.Conv2d(out_dim * 2, out_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        size = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        x = instance_norm(self.norm1, self.conv1(x), relu=True)
        stages = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            # A stage already at the output size is its own resize (align_corners: exact).
            same = tuple(x.shape[-2:]) == size
            stages.append(x if same else F.interpolate(x, size, mode="bilinear",
                                                       align_corners=True))
        x = instance_norm(self.norm2, self.conv2(torch.cat(stages, dim=1)), relu=True)
        return self.conv3(x)


# -- 3. Sampling helpers ----------------------------------------------------------------------


def gather_windows(fmaps: Tensor, xy: Tensor, frames: Tensor, radius: int) -> Tensor:
    """The ``(P+1) x (P+1)`` pixel windows (P = 2r+1) under bilinear patches around points.

    Args:
        fmaps: ``(B, T, H, W, C)`` features.
        xy: ``(B, n, K, 2)`` patch centres in feature pixels (integers are pixel centres,
            as with ``align_corners=True``).
        frames: ``(B, n, K)`` frame of each centre.

    Returns:
        ``(B, n, K, P+1, P+1, C)`` windows indexed (x, y), whose top-left pixel is the floor
        of the centre minus r. Outside the map, pixels repeat the border (clamping whole-pixel
        indices equals border padding of the coordinates).

    The patch offsets are whole pixels, so all P*P samples of a patch share one pair of
    bilinear weights (see `blend`): a window read once serves the whole patch.
    """
    B, T, H, W, C = fmaps.shape
    P = 2 * radius + 1
    corner = xy.floor().long() - radius
    steps = torch.arange(P + 1, device=xy.device)
    xs = (corner[..., 0, None] + steps).clamp(0, W - 1)  # B n K P+1
    ys = (corner[..., 1, None] + steps).clamp(0, H - 1)
    index = (frames[..., None, None] * H + ys[..., None, :]) * W + xs[..., :, None]
    flat = fmaps.reshape(B, T * H * W, C)
    # index_select copies whole rows (advanced indexing goes element by element: ~1.8x
    # slower on CPU).
    windows = [flat[b].index_select(0, index[b].flatten()) for b in range(B)]
    if B == 1:  # the usual case: no stacking copy
        return windows[0].view(index.shape + (C,))
    return torch.stack(windows).view(index.shape + (C,))


def blend(window: Tensor, xy: Tensor) -> Tensor:
    """Bilinear patches ``(B, n, K, P, P, D)`` from windows ``(B, n, K, P+1, P+1, D)`` of
    `gather_windows` (or anything linear in them) at centres ``xy (B, n, K, 2)``."""
    frac = (xy - xy.floor()).to(window.dtype)
    fx, fy = (frac[..., i, None, None, None] for i in (0, 1))
    # Along x, then along y: two passes instead of four weighted sums (2x faster on CPU, and
    # one rounding fewer in bf16).
    across = torch.lerp(window[..., :-1, :, :], window[..., 1:, :, :], fx)
    return torch.lerp(across[..., :-1, :], across[..., 1:, :], fy)


def sample_patches(fmaps: Tensor, xy: Tensor, frames: Tensor, radius: int) -> Tensor:
    """Bilinear ``(2r+1) x (2r+1)`` patches ``(B, n, K, P*P, C)`` of channels-last features
    ``(B, T, H, W, C)`` around ``xy (B, n, K, 2)`` on ``frames (B, n, K)``, flattened with x
    varying slowest (the order the correlation MLP was trained on)."""
    patches = blend(gather_windows(fmaps, xy, frames, radius), xy)
    return patches.reshape(*xy.shape[:3], -1, fmaps.shape[-1])


def motion_encoding(delta: Tensor, num_freqs: int) -> Tensor:
    """Sines of ``delta (..., D)`` at frequencies 1, 2, 4, ... -> ``(..., D + 2 * D * F)``:
    the raw values, then sin of every frequency-scaled value, then the same shifted by pi/2."""
    freqs = 2.0 ** torch.arange(num_freqs, device=delta.device, dtype=delta.dtype)
    x = (delta[..., None, :] * freqs[:, None]).flatten(-2)  # frequency-major
    return torch.cat([delta, torch.sin(torch.cat([x, x + 0.5 * math.pi], dim=-1))], dim=-1)


def narrow_inputs(track: Tensor, vis: Tensor, conf: Tensor, extent: Tensor,
                  num_freqs: int) -> Tensor:
    """The token embedding's narrow inputs ``(B, N, T, 2 + 4 + 8 * num_freqs)``: visibility
    and confidence logits ``(B, T, N)``, then the `motion_encoding` of the motion to the next
    and from the previous frame (zero at the ends) of ``track (B, N, T, 2)``, as a fraction
    of the feature map ``extent (2,)``. Built track-major, as the tokens are: a product with
    a transposed input runs as a batched GEMM, on GPUs a slow one (2.0 ms against 0.41 ms for
    an online window of 40,000 points on an H200)."""
    to_next = F.pad(track[:, :, :-1] - track[:, :, 1:], (0, 0, 0, 1))
    from_prev = F.pad(track[:, :, 1:] - track[:, :, :-1], (0, 0, 1, 0))
    motion = torch.cat([to_next / extent, from_prev / extent], dim=-1)
    return torch.cat([vis.transpose(1, 2)[..., None], conf.transpose(1, 2)[..., None],
                      motion_encoding(motion, num_freqs)], -1)


def sincos_embedding(dim: int, positions: Tensor) -> Tensor:
    """1D sine-cosine embedding ``(1, M, dim)`` of ``positions (M,)`` (the time_emb init)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = positions.double()[:, None] * omega[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)[None].float()


# -- 4. Transformer ---------------------------------------------------------------------------


# POINTTRACK_EXACT_GELU=1: the exact GELU in reduced precision on GPUs too (see `Mlp.hidden`).
EXACT_GELU = os.environ.get("POINTTRACK_EXACT_GELU", "0") == "1"


class Mlp(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int | None = None,
                 approximate: str = "none") -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = nn.GELU(approximate=approximate)
        self.fc2 = nn.Linear(hidden_dim, out_dim or in_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.hidden(x))

    def hidden(self, x: Tensor, fc1_weight: Tensor | None = None) -> Tensor:
        """``act(fc1(x))``; ``fc1_weight`` replaces fc1's weight (e.g. zero-padded inputs)."""
        weight = self.fc1.weight if fc1_weight is None else fc1_weight
        if (x.is_cuda and x.dtype != torch.float32 and weight.dtype == x.dtype
                and hasattr(torch, "_addmm_activation")
                and (self.act.approximate == "tanh" or not EXACT_GELU)):
            # cuBLAS applies the GELU in the matrix product's epilogue: one pass fewer. Its
            # GELU is the tanh form; for the exact-GELU correlation MLP it differs by at most
            # 4.7e-4, a fifth of bf16's mean rounding of the output (2.6e-3), and saves a
            # pass over its (tokens x 4, 384) output (52 us of 289 per offline chunk on an
            # H200). POINTTRACK_EXACT_GELU=1 keeps the exact form; fp32 always does.
            return torch._addmm_activation(
                self.fc1.bias, x.reshape(-1, x.shape[-1]), weight.t(), use_gelu=True
            ).reshape(*x.shape[:-1], -1)
        if (x.dtype == torch.bfloat16 and x.device.type == "cpu" and not torch.is_grad_enabled()
                and _onednn_linear_gelu()):
            # oneDNN applies the GELU in the product's epilogue, in fp32 before the one
            # rounding to bf16: a pass fewer (the GELUs were ~4% of a CPU call), closer to fp32.
            # Inference only: the op has no gradient.
            return torch.ops.mkldnn._linear_pointwise(x, weight, self.fc1.bias, "gelu", [],
                                                      self.act.approximate)
        return self.act(F.linear(x, weight, self.fc1.bias))


@functools.cache
def _onednn_linear_gelu() -> bool:
    """Whether this PyTorch has oneDNN's linear with a GELU epilogue (what its compiler uses
    on CPU; a private op, so checked rather than assumed)."""
    try:
        x = torch.ones(1, 2, dtype=torch.bfloat16)
        y = torch.ops.mkldnn._linear_pointwise(x, x, None, "gelu", [], "tanh")
        return torch.allclose(y.float(), F.gelu(torch.full((1, 1), 2.0), approximate="tanh"),
                              atol=2e-2)
    except (AttributeError, RuntimeError):
        return False


class Attention(nn.Module):
    """Multi-head attention of ``x (B, N, C)`` over ``context (B, M, C)`` (itself if None)."""

    def __init__(self, dim: int, num_heads: int, head_dim: int = 48) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        inner = num_heads * head_dim
        self.to_q = nn.Linear(dim, inner)
        self.to_kv = nn.Linear(dim, 2 * inner)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        B, N, _ = x.shape
        q = self.to_q(x)
        kv = self.to_kv(x if context is None else context)
        if context is None and attention.available(q):
            # Attention along a track's frames (up to 128): one packed kernel.
            return self.to_out(attention.short_attention(q, kv, self.num_heads, self.head_dim))
        if context is not None and attention.few_keys_available(q, kv):
            # The points reading the virtual tracks: all keys fit one tile.
            return self.to_out(attention.few_keys_attention(q, kv, self.num_heads,
                                                            self.head_dim))

        def heads(t: Tensor) -> Tensor:
            return t.reshape(B, t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

        q = heads(q)
        k, v = (heads(t) for t in kv.chunk(2, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(B, N, -1))


class AttnBlock(nn.Module):
    """Pre-norm self-attention block."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), approximate="tanh")

    def forward(self, x: Tensor) -> Tensor:
        """Updates ``x (B, N, C)`` in place (inference: the residual stream is the largest
        tensor here) and returns it."""
        x += self.attn(self.norm1(x))
        x += self.mlp(self.norm2(x))
        return x


class CrossAttnBlock(nn.Module):
    """Pre-norm cross-attention block; the context has its own (affine) norm."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm_context = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), approximate="tanh")

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """Updates ``x (B, N, C)`` in place from ``context (B, M, C)``, already through
        `norm_context` (the caller often has it normalised for free), and returns it."""
        x += self.cross_attn(self.norm1(x), context)
        x += self.mlp(self.norm2(x))
        return x


class UpdateFormer(nn.Module):
    """Tokens ``(B, N, T, D_in)`` -> updates ``(B, N, T, 4)``: (dx, dy, dvis, dconf).

    Each layer attends along time within every track, then across tracks: learned virtual
    tracks read from all points, attend among themselves, and the points read them back. This
    costs O(N * V) instead of O(N^2) for N points and V virtual tracks.
    """

    def __init__(self, cfg: CoTracker3Config) -> None:
        super().__init__()
        dim, heads, ratio = cfg.hidden_size, cfg.num_heads, cfg.mlp_ratio
        self.input_transform = nn.Linear(cfg.input_dim, dim)
        self.flow_head = nn.Linear(dim, 2)
        self.vis_conf_head = nn.Linear(dim, 2)
        # The official key is spelled "virual_tracks"; kept so checkpoints load.
        self.virual_tracks = nn.Parameter(torch.empty(1, cfg.num_virtual_tracks, 1, dim))
        if not self.virual_tracks.is_meta:  # randn on meta imports sympy (~1-2 s)
            nn.init.normal_(self.virual_tracks)
        self.time_blocks = nn.ModuleList(AttnBlock(dim, heads, ratio) for _ in range(cfg.depth))
        self.space_virtual_blocks = nn.ModuleList(
            AttnBlock(dim, heads, ratio) for _ in range(cfg.depth)
        )
        self.space_point2virtual_blocks = nn.ModuleList(
            CrossAttnBlock(dim, heads, ratio) for _ in range(cfg.depth)
        )
        self.space_virtual2point_blocks = nn.ModuleList(
            CrossAttnBlock(dim, heads, ratio) for _ in range(cfg.depth)
        )

    def forward(self, x: Tensor, token_budget: int = 2**16,
                attention_budget: int = 2**16) -> Tensor:
        return self.run(self.input_transform(x), token_budget, attention_budget)

    def run(self, tokens: Tensor, token_budget: int = 2**16,
            attention_budget: int = 2**16) -> Tensor:
        """Embedded tokens ``(B, N, T, C)`` -> updates ``(B, N, T, 4)``. ``tokens`` is used
        as the points' residual stream: it is overwritten.

        Every block works on independent groups (tracks for time attention, frames for space
        attention), so they run in chunks of about ``token_budget`` tokens: the same numbers
        as one pass, with activations bounded whatever N and T. The virtual tracks' attention
        over all points of a frame runs over up to ``attention_budget`` points at once: with
        64 queries per frame it only fills a GPU across many frames. The points' stream lives
        twice, track-major for time and frame-major for space; the last residual add of each
        step writes straight into the other layout, with the LayerNorm the next step starts
        with (`add_norm`), so no pass is spent on transposes or norms alone.
        """
        B, N, T, C = tokens.shape
        V = self.virual_tracks.shape[1]
        points = tokens  # (B, N, T, C)
        points_t = tokens.new_empty(B, T, N, C)  # frame-major: the points' stream for space
        context_t = torch.empty_like(points_t)  # its norm_context for the virtual-to-point block
        virtual = tokens.new_empty(B, V, T, C).copy_(self.virual_tracks.expand(B, -1, T, -1))
        tracks_per_chunk = max(1, token_budget // T)
        frames_per_chunk = max(1, token_budget // (N + V))
        frames_per_attention = max(frames_per_chunk, attention_budget // (N + V))

        def frame_major(buffer: Tensor, b: int, n: slice) -> Tensor:  # (n, T, C) view
            return buffer[b, :, n].transpose(0, 1)

        for i in range(len(self.time_blocks)):
            time, v2p = self.time_blocks[i], self.space_virtual2point_blocks[i]
            virtual_block, p2v = self.space_virtual_blocks[i], self.space_point2virtual_blocks[i]
            for b in range(B):
                for n0 in range(0, N, tracks_per_chunk):
                    n = slice(n0, min(N, n0 + tracks_per_chunk))
                    x = points[b, n]  # (n, T, C): attention along each track's frames
                    attended = time.attn(self._normed(x))
                    self._residual_mlp(time, x, attended, sum_to=frame_major(points_t, b, n),
                                       affine_to=frame_major(context_t, b, n),
                                       weight=v2p.norm_context.weight, bias=v2p.norm_context.bias,
                                       affine_eps=v2p.norm_context.eps)
            time(virtual.view(B * V, T, C))
            virtual_t = virtual.transpose(1, 2).reshape(B, T, V, C)
            for b in range(B):
                for a0 in range(0, T, frames_per_attention):
                    a = slice(a0, min(T, a0 + frames_per_attention))
                    v2p(virtual_t[b, a], context_t[b, a])
                    virtual_block(virtual_t[b, a])
                    for f0 in range(a.start, a.stop, frames_per_chunk):
                        f = slice(f0, min(a.stop, f0 + frames_per_chunk))
                        p = points_t[b, f]  # (f, N, C): attention across tracks
                        attended = p2v.cross_attn(self._normed(p),
                                                  p2v.norm_context(virtual_t[b, f]))
                        self._residual_mlp(p2v, p, attended,
                                           sum_to=points[b, :, f].transpose(0, 1))
            virtual = virtual_t.transpose(1, 2).contiguous()
        heads = (self.flow_head, self.vis_conf_head)
        weight = torch.cat([h.weight for h in heads])
        bias = torch.cat([h.bias for h in heads])
        if points.is_cuda:
            # cuBLAS runs a product with 4 outputs 2-2.6x slower than with 8 (H200: 96 against
            # 51 us for 210,000 tokens; the same numbers): pad the heads with zero rows.
            weight, bias = F.pad(weight, (0, 0, 0, 4)), F.pad(bias, (0, 4))
            return F.linear(points, weight, bias)[..., :4]
        return F.linear(points, weight, bias)

    @staticmethod
    def _normed(x: Tensor, y: Tensor | None = None) -> Tensor:
        """The non-affine LayerNorm of ``x`` (first ``x += y`` in place, if given) in a new
        tensor; ``x (P, Q, C)``."""
        h = torch.empty_like(x)
        add_norm(x, y, sum_to=None if y is None else x, norm_to=h)
        return h

    @classmethod
    def _residual_mlp(cls, block: nn.Module, x: Tensor, attended: Tensor, **last) -> None:
        """``x += attended; x += block.mlp(norm2(x))`` for ``x (P, Q, C)``, the last sum (and
        norms of it) written where `add_norm`'s ``last`` arguments say (not into ``x``)."""
        add_norm(x, block.mlp(cls._normed(x, attended)), **last)


# -- 5. The shared tracker core ---------------------------------------------------------------


class CoTracker3(nn.Module):
    """Networks and refinement shared by the offline and online models."""

    def __init__(self, cfg: CoTracker3Config) -> None:
        super().__init__()
        self.cfg = dataclasses.replace(cfg)  # each model may change its own options
        self.fnet = FeatureEncoder(cfg.latent_dim, cfg.stride)
        self.updateformer = UpdateFormer(cfg)
        self.corr_mlp = Mlp(cfg.patch**4, 384, cfg.corr_dim)
        self.register_buffer("time_emb", torch.empty(1, cfg.window_len, cfg.input_dim))
        if not self.time_emb.is_meta:  # arange on meta imports sympy (~1-2 s)
            time = torch.arange(cfg.window_len, dtype=torch.float32)
            self.time_emb.copy_(sincos_embedding(cfg.input_dim, time))

    # Features ---------------------------------------------------------------------------------

    def encode(self, video: Tensor) -> list[Tensor]:
        """Frames ``(B, T, 3, H, W)`` in 0..255 -> pyramid of unit-norm features, level l of
        shape ``(B, T, H/4/2^l, W/4/2^l, C)`` (channels last: patches gather whole vectors)."""
        B, T = video.shape[:2]
        frames = video.reshape(B * T, *video.shape[2:])
        chunks = []
        step = self.cfg.encoder_chunk
        compiled = self._compiled_encoder(video)
        # cuDNN's autotuner (`cfg.cudnn_benchmark`: the engines turn it on with the compiled
        # CNN in bf16) is scoped here, so the caller's setting stays as it was.
        benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = benchmark or (video.is_cuda and self.cfg.cudnn_benchmark)
        try:
            for i in range(0, B * T, step):
                x = frames[i : i + step] / 255.0 * 2 - 1
                x = x.to(self.fnet.conv1.weight.dtype)  # a model converted to bf16 takes bf16
                if not x.is_cuda:
                    # The frames come channels-last (permuted from (T, H, W, 3)). bf16/fp16:
                    # see `cpu_channels_last`. fp32 runs channels-first, from the stem on: a
                    # channels-last stem writes channels-last, which the instance norm then
                    # copies (3% of an fp32 call on 2 cores; the same features).
                    x = x.contiguous(memory_format=torch.channels_last
                                     if x.dtype != torch.float32 and self.cfg.cpu_channels_last
                                     else torch.contiguous_format)
                elif self.cfg.gpu_stem_channels_first:
                    x = x.contiguous()
                n, f = len(x), None
                if compiled is not None and not (n < step and n <= self.cfg.eager_encoder_tail):
                    # One input shape, one compilation: the last chunk is padded (frames are
                    # independent under instance norm, so padding changes nothing).
                    padded = x if n == step else torch.cat(
                        [x, x[-1:].expand(step - n, *x.shape[1:])])
                    try:
                        f = compiled(padded)[:n]
                    except Exception as e:  # compiling needs a working Triton toolchain
                        warnings.warn(f"torch.compile of the encoder failed, running it eagerly "
                                      f"({type(e).__name__}: {e})", stacklevel=2)
                        self.cfg.compile_encoder, compiled = False, None
                if f is None:
                    f = self.fnet(x)
                chunks.append(f / f.square().sum(1, keepdim=True).clamp_min(1e-12).sqrt())
        finally:
            torch.backends.cudnn.benchmark = benchmark
        fmap = torch.cat(chunks)
        pyramid = [fmap]
        for _ in range(self.cfg.corr_levels - 1):
            fmap = F.avg_pool2d(fmap, 2, stride=2)
            pyramid.append(fmap)
        return [f.permute(0, 2, 3, 1).reshape(B, T, *f.shape[2:], f.shape[1]) for f in pyramid]

    def _compiled_encoder(self, video: Tensor) -> Callable | None:
        """The CNN through ``torch.compile`` where that pays: CUDA with Triton and a bf16 or
        fp16 model. Inductor fuses the instance norms, activations and resizes the eager CNN
        spends most of its time on (2.3x faster on an H100), once per process (its cache on
        disk makes later processes quick)."""
        if not (self.cfg.compile_encoder and video.is_cuda and corr_triton.available(video)
                and self.fnet.conv1.weight.dtype in (torch.bfloat16, torch.float16)):
            return None
        cache = self.__dict__.setdefault("_compiled", {})  # not a submodule: no state-dict keys
        if "fnet" not in cache:
            cache["fnet"] = torch.compile(self.fnet, dynamic=False)
        return cache["fnet"]

    def query_features(self, pyramid: list[Tensor], frames: Tensor, xy: Tensor) -> list[Tensor]:
        """Patch features ``(B, N, P*P, C)`` per level around each query.

        ``frames (B, N)`` index the pyramid's time axis, ``xy (B, N, 2)`` are feature pixels.
        """
        return [self.query_level(fmaps, frames, xy, level) for level, fmaps in enumerate(pyramid)]

    def query_level(self, fmaps: Tensor, frames: Tensor, xy: Tensor, level: int) -> Tensor:
        """`query_features` of one pyramid level ``fmaps (B, T, H, W, C)``."""
        return sample_patches(
            fmaps, xy[:, :, None] / 2**level, frames[:, :, None], self.cfg.corr_radius
        )[:, :, 0]

    # Refinement -------------------------------------------------------------------------------

    def correlate(self, pyramid: list[Tensor], xy: Tensor, support: list[Tensor],
                  fc1_padded: Tensor | None = None) -> Tensor:
        """Hidden features ``(B, n, T, levels * 384)`` of the 4D correlation of tracks at
        ``xy (B, n, T, 2)`` (feature pixels).

        At every level, the P*P features around each track's current position are dotted with
        the P*P features around its query: a (P*P) x (P*P) volume, which goes through the
        first layer of `corr_mlp` (with its activation). The second layer is linear, like the
        token embedding it feeds, so `refine` folds the two into one matrix.
        """
        B, n, T, _ = xy.shape
        if self.fused_correlation(pyramid):
            # One fused kernel writes the volumes of all levels as rows padded for the GEMM.
            volume = corr_triton.correlate_volumes(
                [p[0] for p in pyramid], xy[0], [s[0] for s in support]
            )
            if fc1_padded is None:
                fc1_padded = _padded(self.corr_mlp.fc1.weight, corr_triton.ROW)
            return self.corr_mlp.hidden(volume, fc1_padded).reshape(B, n, T, -1)
        P2 = self.cfg.patch**2
        frames = torch.arange(T, device=xy.device).expand(B, n, T)
        hidden = []
        for level, fmaps in enumerate(pyramid):
            at = xy / 2**level
            window = gather_windows(fmaps, at, frames, self.cfg.corr_radius)
            C, U = window.shape[-1], window.shape[-2] ** 2
            query = support[level].to(window.dtype)  # B n P2 C
            # Correlate the window's pixels with the query patch first, then blend: the dot
            # product is linear, and P2 (49) channels are cheaper to blend than C (128).
            window_corr = torch.bmm(
                window.reshape(B * n, T * U, C), query.reshape(B * n, P2, C).transpose(1, 2)
            ).reshape(*window.shape[:-1], P2)
            volume = blend(window_corr, at)  # B n T P P P2
            hidden.append(self.corr_mlp.hidden(volume.reshape(B, n, T, P2 * P2)))
        return torch.cat(hidden, dim=-1)

    def fused_correlation(self, pyramid: list[Tensor]) -> bool:
        """Whether `correlate` runs the fused GPU kernel: CUDA with Triton, one video, 4
        levels of 7x7 patches, and a reduced-precision model (fp32 keeps the PyTorch path, whose
        matrix products give fp32 parity at full speed)."""
        return (pyramid[0].shape[0] == 1 and corr_triton.available(pyramid[0])
                and self.cfg.corr_radius == 3 and self.cfg.corr_levels == 4
                and pyramid[0].dtype != torch.float32)

    def time_embedding(self, T: int) -> Tensor:
        """``(1, T, D)``: the learned embedding, linearly resampled when T differs."""
        if T == self.time_emb.shape[1]:
            return self.time_emb
        return F.interpolate(self.time_emb.transpose(1, 2), size=T, mode="linear").transpose(1, 2)

    def refine(
        self,
        pyramid: list[Tensor],
        support: list[Tensor],
        coords: Tensor,
        vis: Tensor,
        conf: Tensor,
        iters: int,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Iteratively update ``coords (B, T, N, 2)`` (feature pixels) and the visibility and
        confidence logits ``(B, T, N)``."""
        T = coords.shape[1]
        H, W = self.cfg.model_resolution
        linear = self.updateformer.input_transform
        weight = linear.weight  # columns: vis, conf, correlations, motion
        corr_cols = slice(2, 2 + self.cfg.corr_levels * self.cfg.corr_dim)
        # The time embedding is added to the input of a linear layer: fold it into a
        # per-frame bias instead of adding it to every wide token.
        time_emb = self.time_embedding(T).to(device=coords.device, dtype=weight.dtype)
        # The correlation MLP's second layer and the embedding's correlation columns are both
        # linear: one (C, levels * 384) matrix takes the MLP's hidden features straight to
        # tokens (composed in fp32), and the MLP's output bias joins the per-frame bias.
        fc2 = self.corr_mlp.fc2
        levels = weight[:, corr_cols].float().unflatten(1, (self.cfg.corr_levels, -1))
        corr = torch.einsum("clk,kh->clh", levels, fc2.weight.float()).flatten(1)
        corr_bias = levels.sum(1) @ fc2.bias.float()
        embed = _Embedding(
            small=torch.cat([weight[:, :corr_cols.start], weight[:, corr_cols.stop :]], 1),
            corr=corr.to(weight.dtype),
            time_bias=(F.linear(time_emb, weight, linear.bias)
                       + corr_bias.to(weight.dtype))[:, None],
            fc1=(_padded(self.corr_mlp.fc1.weight, corr_triton.ROW)
                 if self.fused_correlation(pyramid) else self.corr_mlp.fc1.weight),
            # Made on the device (no host copy): refine may be captured in a CUDA graph.
            extent=torch.stack([coords.new_full((), W), coords.new_full((), H)]) / self.cfg.stride,
        )

        def step(coords: Tensor, vis: Tensor, conf: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            return self.iteration(pyramid, support, embed, coords, vis, conf)

        state = (coords.float(), vis.float(), conf.float())
        with _attention_backends(self.cfg.cudnn_attention):
            for _ in range(iters):
                state = step(*state)
        return state

    def iteration(
        self,
        pyramid: list[Tensor],
        support: list[Tensor],
        embed: _Embedding,
        coords: Tensor,
        vis: Tensor,
        conf: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One refinement step of `refine`."""
        B, T, N, _ = coords.shape
        P2, C = self.cfg.patch**2, self.cfg.latent_dim
        if self.fused_correlation(pyramid):  # bounded by the volume rows (T x 4 per point)
            chunk = max(1, self.cfg.corr_budget // (T * self.cfg.corr_levels * corr_triton.ROW))
        else:  # bounded by the gathered patches
            chunk = max(1, self.cfg.corr_budget // (B * T * P2 * C))
        dtype = embed.corr.dtype
        track = coords.transpose(1, 2).contiguous()  # B N T 2
        # The input layer is linear: its narrow inputs (visibility, confidence, motion) and
        # the time embedding go in for all points at once, then the correlations of each
        # chunk of points are added, so the wide (1110) input never exists whole.
        small = narrow_inputs(track, vis, conf, embed.extent, self.cfg.num_freqs)
        tokens = F.linear(small.to(dtype), embed.small) + embed.time_bias  # B N T C
        for n0 in range(0, N, chunk):
            part = slice(n0, n0 + chunk)
            hidden = self.correlate(pyramid, track[:, part], [s[:, part] for s in support],
                                    embed.fc1)
            rows = tokens[:, part]
            if rows.is_contiguous():  # one video: add in the matrix product's epilogue
                rows.view(-1, rows.shape[-1]).addmm_(hidden.reshape(-1, hidden.shape[-1]).to(dtype),
                                                    embed.corr.t())
            else:
                rows += F.linear(hidden.to(dtype), embed.corr)
        delta = self.updateformer.run(tokens, self.cfg.token_budget, self.cfg.attention_budget)
        delta = delta.transpose(1, 2).float()  # B T N 4
        return coords + delta[..., :2], vis + delta[..., 2], conf + delta[..., 3]


class _Embedding(NamedTuple):
    """The token embedding's weights, split and prepared once per `CoTracker3.refine`."""

    small: Tensor  # (C, 86) input-layer columns of visibility, confidence and motion
    corr: Tensor  # (C, levels * 384) correlation MLP hidden features -> tokens
    time_bias: Tensor  # (1, 1, T, C) the time embedding through the input layer, with bias
    fc1: Tensor  # the correlation MLP's first weight, padded to the fused kernel's rows
    extent: Tensor  # (2,) feature map width and height


def _attention_backends(cudnn: bool):
    """SDPA backends for the transformer: all of PyTorch's, or all but cuDNN's."""
    if cudnn:
        return contextlib.nullcontext()
    return sdpa_kernel(_NO_CUDNN)


_NO_CUDNN = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def _padded(weight: Tensor, columns: int) -> Tensor:
    """``weight (out, in)`` with zero columns appended up to ``columns`` inputs."""
    if weight.shape[1] == columns:
        return weight
    return F.pad(weight, (0, columns - weight.shape[1]))


def _capture(fn) -> torch.cuda.CUDAGraph:
    """Capture ``fn()`` as a CUDA graph on a side stream. Unlike ``torch.cuda.graph`` this
    neither synchronises nor empties the allocator's cache: the GPU keeps working on what
    was queued before while the CPU records."""
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        graph.capture_begin()
        try:
            fn()
        finally:
            graph.capture_end()
    torch.cuda.current_stream().wait_stream(stream)
    return graph


class CapturedRefine:
    """`CoTracker3.refine` for calls whose inputs keep their shapes (the online model's
    windows): the first call runs as usual, the second captures the whole refinement as one
    CUDA graph, and later calls copy their inputs into its buffers and replay it. The query
    features (``support``) are read in place: they must be the same tensors every call."""

    def __init__(self, model: CoTracker3) -> None:
        self.model = model
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.owner: Callable[[], object] = lambda: None  # its state (`_attach_buffers`)
        self.pool_key: tuple = ()
        self.support: list[Tensor] = []

    def __call__(self, pyramid: list[Tensor], support: list[Tensor], coords: Tensor,
                 vis: Tensor, conf: Tensor, iters: int) -> tuple[Tensor, Tensor, Tensor]:
        inputs = (*pyramid, coords, vis, conf)
        key = (iters, [(t.shape, t.dtype) for t in inputs], [t.data_ptr() for t in support])
        if self.graph is None or key != self.key:
            self.calls += 1
            if self.calls < 2 or not coords.is_cuda:  # kernels compile on an eager run first
                return self.model.refine(pyramid, support, coords, vis, conf, iters)
            self.graph = None  # until this capture succeeds (it is kept across calls)
            self.static = tuple(t.clone() for t in inputs)
            levels = list(self.static[: len(pyramid)])
            self.out: tuple[Tensor, ...] = ()

            def run() -> None:
                self.out = self.model.refine(levels, support, *self.static[len(pyramid) :],
                                             iters)

            self.graph = _capture(run)
            self.key = key
        for s, t in zip(self.static, inputs, strict=True):
            s.copy_(t)
        self.graph.replay()
        return tuple(o.clone() for o in self.out)


# -- 6a. Offline ------------------------------------------------------------------------------


class CoTracker3Offline(CoTracker3):
    """Tracks queries through a whole video at once (the time embedding is resampled to T)."""

    def __init__(self, cfg: CoTracker3Config = OFFLINE) -> None:
        super().__init__(cfg)

    def forward(
        self, video: Tensor, queries: Tensor, iters: int | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Track ``queries (B, N, 3)`` (t, x, y) through ``video (B, T, 3, H, W)`` (0..255).

        Returns coords ``(B, T, N, 2)`` (model pixels), visibility and confidence
        probabilities ``(B, T, N)``.
        """
        return self.track(self.encode(video), queries, iters)

    def track(
        self, pyramid: list[Tensor], queries: Tensor, iters: int | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """`forward` from features made by `encode` (so several calls can share them)."""
        B, T = pyramid[0].shape[:2]
        N = queries.shape[1]
        frames = queries[..., 0].long()
        xy = queries[..., 1:3].float() / self.cfg.stride
        support = self.query_features(pyramid, frames, xy)
        coords = xy[:, None].expand(B, T, N, 2)
        zeros = coords.new_zeros(B, T, N)
        coords, vis, conf = self.refine(
            pyramid, support, coords, zeros, zeros, iters or self.cfg.iters
        )
        return coords * self.cfg.stride, vis.sigmoid(), conf.sigmoid()


# -- 6b. Online -------------------------------------------------------------------------------


@dataclasses.dataclass
class OnlineState:
    """What the online model carries from one window to the next.

    ``queries (B, N, 3)`` in model pixels; ``start`` is the first frame of the next window;
    ``support`` the query patch features per level (filled as the query frames arrive);
    ``carry`` the last window's coords (feature pixels) and logits for the frames the next
    window overlaps.
    """

    queries: Tensor
    start: int = 0
    support: list[Tensor] | None = None
    carry: tuple[Tensor, Tensor, Tensor] | None = None
    query_frames: Tensor | None = None  # (B, N) on the CPU: which window samples each query
    refine: Callable | None = None  # the model's refine, captured as a CUDA graph on GPU

    def __post_init__(self) -> None:
        if self.query_frames is None:
            self.query_frames = self.queries[..., 0].long().cpu()


class CoTracker3Online(CoTracker3):
    """Tracks through windows of 16 frames that move by 8: each window starts from the
    previous window's predictions on the 8 frames they share."""

    def __init__(self, cfg: CoTracker3Config = ONLINE) -> None:
        super().__init__(cfg)

    @property
    def step(self) -> int:
        return self.cfg.window_len // 2

    def init_state(self, queries: Tensor) -> OnlineState:
        return OnlineState(queries=queries.float())

    def forward(
        self, chunk: Tensor, state: OnlineState, iters: int | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Process frames ``[state.start, state.start + Tc)`` given as ``chunk (B, Tc, 3, H,
        W)`` (0..255, Tc <= window) and advance the state by one step.

        Returns coords ``(B, Tc, N, 2)`` (model pixels), visibility and confidence
        probabilities ``(B, Tc, N)`` for those frames.
        """
        S, Tc = self.cfg.window_len, chunk.shape[1]
        if not 1 <= Tc <= S:
            raise ValueError(f"an online chunk has 1..{S} frames, got {Tc}")
        return self.track(self.pad_window(self.encode(chunk)), state, Tc, iters)

    def _attach_buffers(self, state: OnlineState, pyramid: list[Tensor]) -> None:
        """Give ``state`` zeroed query-feature buffers ``(B, N, 49, C)`` per level and its
        refine: on GPU a `CapturedRefine`, reused from an earlier state of the same shape
        once that state is gone (a video tracked before), buffers and all. So a tracker's
        later videos with as many points replay the captured graph from their first window,
        where a fresh capture runs one window eagerly and records on the second (~0.13 s of
        a 0.78 s call, 1080p online grid 50, H200: benchmarks/NOTES.md session 19). Captures
        of other shapes are dropped when their states are gone, freeing their memory."""
        B, N = state.queries.shape[:2]
        like = pyramid[0]
        shape = (B, N, self.cfg.patch**2, self.cfg.latent_dim)

        def zeros() -> list[Tensor]:
            return [like.new_zeros(shape) for _ in pyramid]

        if not (self.cfg.cuda_graphs and like.is_cuda):
            state.support, state.refine = zeros(), self.refine
            return
        key = (shape, len(pyramid), like.dtype, like.device)
        pool: list[CapturedRefine] = self.__dict__.setdefault("_captures", [])  # no state dict
        pool[:] = [c for c in pool if c.owner() is not None or c.pool_key == key]
        capture = next((c for c in pool if c.owner() is None), None)
        if capture is None:
            capture = CapturedRefine(self)
            capture.pool_key, capture.support = key, zeros()
            pool.append(capture)
        else:
            for buffer in capture.support:
                buffer.zero_()
        capture.owner = weakref.ref(state)
        state.support, state.refine = capture.support, capture

    def pad_window(self, pyramid: list[Tensor]) -> list[Tensor]:
        """Features of a short last window padded to the full window by repeating its last
        frame (what padding the video with that frame would give: features are per frame)."""
        S, Tc = self.cfg.window_len, pyramid[0].shape[1]
        if Tc == S:
            return pyramid
        return [torch.cat([p, p[:, -1:].expand(-1, S - Tc, *p.shape[2:])], dim=1) for p in pyramid]

    def track(
        self, pyramid: list[Tensor], state: OnlineState, Tc: int, iters: int | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """`forward` from the window's features (``S`` frames, made by `encode`)."""
        S, step, stride = self.cfg.window_len, self.step, self.cfg.stride
        B, N = state.queries.shape[:2]
        start = state.start
        frames = state.queries[..., 0].long()
        xy = state.queries[..., 1:3] / stride

        # Query features of the points whose frame is new in this window; points whose
        # frame has not come yet keep zeros. Decided on the CPU: no sync with the GPU.
        first_new = 0 if start == 0 else start + step
        if state.support is None:
            self._attach_buffers(state, pyramid)
        host = state.query_frames
        for b in range(B):
            idx = torch.nonzero((host[b] >= first_new) & (host[b] < start + S))[:, 0]
            if len(idx):
                idx = idx.to(xy.device)
                on, at = frames[b : b + 1, idx] - start, xy[b : b + 1, idx]
                # A level at a time into the kept buffers: all levels sampled first would be a
                # second copy of the query features while the window runs (1.9 GiB at 40,000
                # points, a third of the peak).
                for level, (s, fmaps) in enumerate(zip(state.support, pyramid, strict=True)):
                    s[b, idx] = self.query_level(fmaps[b : b + 1], on, at, level)[0].to(s.dtype)
        support = state.support

        # Start from the query point, or from the last window's predictions where it has them.
        coords = xy[:, None].expand(B, S, N, 2)
        vis = conf = coords.new_zeros(B, S, N)
        if state.carry is not None:
            overlap = S - step
            known = (frames < start + overlap)[:, None]  # B 1 N

            def extend(x: Tensor) -> Tensor:  # repeat the last overlapping frame
                return torch.cat([x, x[:, -1:].expand(-1, S - overlap, *x.shape[2:])], dim=1)

            prev_coords, prev_vis, prev_conf = (extend(x) for x in state.carry)
            coords = torch.where(known[..., None], prev_coords, coords)
            vis = torch.where(known, prev_vis, vis)
            conf = torch.where(known, prev_conf, conf)

        coords, vis, conf = (state.refine or self.refine)(
            pyramid, support, coords, vis, conf, iters or self.cfg.iters
        )
        state.carry = (coords[:, step:], vis[:, step:], conf[:, step:])
        state.start = start + step
        return coords[:, :Tc] * stride, vis[:, :Tc].sigmoid(), conf[:, :Tc].sigmoid()
