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

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
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
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(x + y)


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
        x = F.relu(self.norm1(self.conv1(x)))
        stages = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            stages.append(F.interpolate(x, size, mode="bilinear", align_corners=True))
        x = F.relu(self.norm2(self.conv2(torch.cat(stages, dim=1))))
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
    if B == 1:  # the usual case: no stacking copy
        return flat[0][index[0]][None]
    return torch.stack([flat[b][index[b]] for b in range(B)])


def blend(window: Tensor, xy: Tensor) -> Tensor:
    """Bilinear patches ``(B, n, K, P, P, D)`` from windows ``(B, n, K, P+1, P+1, D)`` of
    `gather_windows` (or anything linear in them) at centres ``xy (B, n, K, 2)``."""
    frac = (xy - xy.floor()).to(window.dtype)
    fx, fy = (frac[..., i, None, None, None] for i in (0, 1))
    # In place: the window and the result are the largest tensors here.
    out = window[..., :-1, :-1, :] * ((1 - fx) * (1 - fy))
    out.addcmul_(window[..., 1:, :-1, :], fx * (1 - fy))
    out.addcmul_(window[..., :-1, 1:, :], (1 - fx) * fy)
    out.addcmul_(window[..., 1:, 1:, :], fx * fy)
    return out


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


def sincos_embedding(dim: int, positions: Tensor) -> Tensor:
    """1D sine-cosine embedding ``(1, M, dim)`` of ``positions (M,)`` (the time_emb init)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = positions.double()[:, None] * omega[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)[None].float()


# -- 4. Transformer ---------------------------------------------------------------------------


class Mlp(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int | None = None,
                 approximate: str = "none") -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = nn.GELU(approximate=approximate)
        self.fc2 = nn.Linear(hidden_dim, out_dim or in_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


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
        context = x if context is None else context
        B, N, _ = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.reshape(B, t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

        q = heads(self.to_q(x))
        k, v = (heads(t) for t in self.to_kv(context).chunk(2, dim=-1))
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
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


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
        x = x + self.cross_attn(self.norm1(x), self.norm_context(context))
        return x + self.mlp(self.norm2(x))


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
        self.virual_tracks = nn.Parameter(torch.randn(1, cfg.num_virtual_tracks, 1, dim))
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

    def forward(self, x: Tensor, token_budget: int = 2**16) -> Tensor:
        return self.run(self.input_transform(x), token_budget)

    def run(self, tokens: Tensor, token_budget: int = 2**16) -> Tensor:
        """Embedded tokens ``(B, N, T, C)`` -> updates ``(B, N, T, 4)``.

        Every block works on independent groups (tracks for time attention, frames for space
        attention), so they run in chunks of about ``token_budget`` tokens, in place: the
        same numbers as one pass, with activations bounded whatever N and T.
        """
        B, N, T, C = tokens.shape
        virtual = self.virual_tracks.to(tokens.dtype).expand(B, -1, T, -1)
        tokens = torch.cat([tokens, virtual], dim=1)  # B (N+V) T C
        M = tokens.shape[1]
        tracks_per_chunk = max(1, token_budget // T)
        frames_per_chunk = max(1, token_budget // M)
        for i in range(len(self.time_blocks)):
            by_track = tokens.reshape(B * M, T, C)
            for a in range(0, B * M, tracks_per_chunk):
                part = by_track[a : a + tracks_per_chunk]
                part.copy_(self.time_blocks[i](part))
            by_frame = by_track.reshape(B, M, T, C).transpose(1, 2).reshape(B * T, M, C)
            for a in range(0, B * T, frames_per_chunk):
                space = by_frame[a : a + frames_per_chunk]
                points, virtual = space[:, :N], space[:, N:]
                virtual = self.space_virtual2point_blocks[i](virtual, points)
                virtual = self.space_virtual_blocks[i](virtual)
                space[:, N:] = virtual
                space[:, :N] = self.space_point2virtual_blocks[i](points, virtual)
            tokens = by_frame.reshape(B, T, M, C).transpose(1, 2).contiguous()
        tokens = tokens[:, :N]
        return torch.cat([self.flow_head(tokens), self.vis_conf_head(tokens)], dim=-1)


# -- 5. The shared tracker core ---------------------------------------------------------------


class CoTracker3(nn.Module):
    """Networks and refinement shared by the offline and online models."""

    def __init__(self, cfg: CoTracker3Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.fnet = FeatureEncoder(cfg.latent_dim, cfg.stride)
        self.updateformer = UpdateFormer(cfg)
        self.corr_mlp = Mlp(cfg.patch**4, 384, cfg.corr_dim)
        time = torch.arange(cfg.window_len, dtype=torch.float32)
        self.register_buffer("time_emb", sincos_embedding(cfg.input_dim, time))

    # Features ---------------------------------------------------------------------------------

    def encode(self, video: Tensor) -> list[Tensor]:
        """Frames ``(B, T, 3, H, W)`` in 0..255 -> pyramid of unit-norm features, level l of
        shape ``(B, T, H/4/2^l, W/4/2^l, C)`` (channels last: patches gather whole vectors)."""
        B, T = video.shape[:2]
        frames = video.reshape(B * T, *video.shape[2:])
        chunks = []
        for i in range(0, B * T, self.cfg.encoder_chunk):
            x = frames[i : i + self.cfg.encoder_chunk] / 255.0 * 2 - 1
            x = x.to(self.fnet.conv1.weight.dtype)  # a model converted to bf16 takes bf16
            f = self.fnet(x)
            chunks.append(f / f.square().sum(1, keepdim=True).clamp_min(1e-12).sqrt())
        fmap = torch.cat(chunks)
        pyramid = [fmap]
        for _ in range(self.cfg.corr_levels - 1):
            fmap = F.avg_pool2d(fmap, 2, stride=2)
            pyramid.append(fmap)
        return [f.permute(0, 2, 3, 1).reshape(B, T, *f.shape[2:], f.shape[1]) for f in pyramid]

    def query_features(
        self, pyramid: list[Tensor], frames: Tensor, xy: Tensor, valid: Tensor | None = None
    ) -> list[Tensor]:
        """Patch features ``(B, N, P*P, C)`` per level around each query.

        ``frames (B, N)`` index the pyramid's time axis, ``xy (B, N, 2)`` are feature pixels.
        Queries where ``valid (B, N)`` is False get zeros.
        """
        out = []
        for level, fmaps in enumerate(pyramid):
            feats = sample_patches(
                fmaps, xy[:, :, None] / 2**level, frames[:, :, None], self.cfg.corr_radius
            )[:, :, 0]
            if valid is not None:
                feats = feats * valid[..., None, None].to(feats.dtype)
            out.append(feats)
        return out

    # Refinement -------------------------------------------------------------------------------

    def correlate(self, pyramid: list[Tensor], xy: Tensor, support: list[Tensor]) -> Tensor:
        """4D correlation embeddings ``(B, n, T, levels * 256)`` of tracks at ``xy (B, n, T,
        2)`` (feature pixels).

        At every level, the P*P features around each track's current position are dotted with
        the P*P features around its query: a (P*P) x (P*P) volume, embedded by `corr_mlp`.
        """
        B, n, T, _ = xy.shape
        P2 = self.cfg.patch**2
        frames = torch.arange(T, device=xy.device).expand(B, n, T)
        embs = []
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
            embs.append(self.corr_mlp(volume.reshape(B, n, T, P2 * P2)))
        return torch.cat(embs, dim=-1)

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
        B, T, N, _ = coords.shape
        H, W = self.cfg.model_resolution
        extent = coords.new_tensor([W, H]) / self.cfg.stride
        time_emb = self.time_embedding(T)
        P2, C = self.cfg.patch**2, self.cfg.latent_dim
        chunk = max(1, self.cfg.corr_budget // (B * T * P2 * C))
        for _ in range(iters):
            # Motion to the next and from the previous frame, as a fraction of the frame.
            to_next = F.pad(coords[:, :-1] - coords[:, 1:], (0, 0, 0, 0, 0, 1))
            from_prev = F.pad(coords[:, 1:] - coords[:, :-1], (0, 0, 0, 0, 1, 0))
            motion = torch.cat([to_next / extent, from_prev / extent], dim=-1)
            # Embed the tokens chunk by chunk of points, so the wide transformer input
            # (B, N, T, 1110) and the correlation volumes never exist for all points at once.
            tokens = None
            for n0 in range(0, N, chunk):
                part = slice(n0, n0 + chunk)
                xy = coords[:, :, part].transpose(1, 2)  # B n T 2
                corr = self.correlate(pyramid, xy, [s[:, part] for s in support])
                parts = [
                    vis[..., part, None].transpose(1, 2),
                    conf[..., part, None].transpose(1, 2),
                    corr,
                    motion_encoding(motion[:, :, part].transpose(1, 2), self.cfg.num_freqs),
                ]
                # In the correlation's dtype: fp32, or bf16/fp16 under autocast, where the
                # transformer would cast its input anyway.
                x = torch.cat([t.to(corr.dtype) for t in parts], dim=-1)  # B n T D
                x = self.updateformer.input_transform(x + time_emb[:, None].to(x.dtype))
                if tokens is None:
                    tokens = x.new_empty(B, N, T, x.shape[-1])
                tokens[:, part] = x
            delta = self.updateformer.run(tokens, self.cfg.token_budget)
            delta = delta.transpose(1, 2).float()  # B T N 4
            coords = coords + delta[..., :2]
            vis = vis + delta[..., 2]
            conf = conf + delta[..., 3]
        return coords, vis, conf


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


@dataclass
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

        # Query features of the points whose frame is new in this window.
        first_new = 0 if start == 0 else start + step
        new = (frames >= first_new) & (frames < start + S)
        if state.support is None:
            C, P2 = self.cfg.latent_dim, self.cfg.patch**2
            state.support = [xy.new_zeros(B, N, P2, C) for _ in pyramid]
        if new.any():
            sampled = self.query_features(pyramid, (frames - start).clamp(0, S - 1), xy, new)
            state.support = [s + f for s, f in zip(state.support, sampled, strict=True)]
        started = (frames < start + S)[..., None, None]  # points not yet queried see zeros
        support = [s * started for s in state.support]

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

        coords, vis, conf = self.refine(
            pyramid, support, coords, vis, conf, iters or self.cfg.iters
        )
        state.carry = (coords[:, step:], vis[:, step:], conf[:, step:])
        state.start = start + step
        return coords[:, :Tc] * stride, vis[:, :Tc].sigmoid(), conf[:, :Tc].sigmoid()
