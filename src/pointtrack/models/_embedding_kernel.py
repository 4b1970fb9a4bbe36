"""The Triton kernel behind `embedding.embed_narrow` (imported on first GPU use, so CPU runs never
load Triton)."""

import triton
import triton.language as tl

HALF_PI = tl.constexpr(1.5707963267948966)


# Token and frame counts change with every video: not specialised (see `_add_norm_kernel`).
@triton.jit(do_not_specialize=["M", "N", "T", "svb", "svt", "svn", "scb", "sct", "scn"])
def _narrow_tokens_kernel(
    track_ptr, vis_ptr, conf_ptr, extent_ptr, w_ptr, bias_ptr, out_ptr,
    M, N, T, svb, svt, svn, scb, sct, scn,
    C: tl.constexpr, K: tl.constexpr, FREQS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)  # tokens (b, n, t)
    valid = rows < M
    t = rows % T
    n = (rows // T) % N
    b = rows // (T * N)
    # Motion to the next and from the previous frame (zero at the ends), over the extent.
    ex = tl.load(extent_ptr)
    ey = tl.load(extent_ptr + 1)
    x = tl.load(track_ptr + 2 * rows, mask=valid, other=0.0)
    y = tl.load(track_ptr + 2 * rows + 1, mask=valid, other=0.0)
    has_next = valid & (t < T - 1)
    has_prev = valid & (t > 0)
    nx = tl.where(has_next, tl.load(track_ptr + 2 * rows + 2, mask=has_next, other=0.0), x)
    ny = tl.where(has_next, tl.load(track_ptr + 2 * rows + 3, mask=has_next, other=0.0), y)
    px = tl.where(has_prev, tl.load(track_ptr + 2 * rows - 2, mask=has_prev, other=0.0), x)
    py = tl.where(has_prev, tl.load(track_ptr + 2 * rows - 1, mask=has_prev, other=0.0), y)
    # IEEE division, as PyTorch's (Triton's `/` is a 2-ulp approximation).
    d0, d1 = tl.div_rn(x - nx, ex)[:, None], tl.div_rn(y - ny, ey)[:, None]
    d2, d3 = tl.div_rn(x - px, ex)[:, None], tl.div_rn(y - py, ey)[:, None]
    vis = tl.load(vis_ptr + b * svb + t * svt + n * svn, mask=valid, other=0.0)[:, None]
    conf = tl.load(conf_ptr + b * scb + t * sct + n * scn, mask=valid, other=0.0)[:, None]
    # Input column k: 0 visibility, 1 confidence, 2-5 the motion, then sin(motion * 2^f) for
    # f < FREQS (frequency-major), then the same shifted by pi/2, then zeros up to BLOCK_K.
    k = tl.arange(0, BLOCK_K)[None, :]
    j = tl.where(k >= 6 + 4 * FREQS, k - 6 - 4 * FREQS, k - 6)
    j = tl.maximum(tl.where(k >= 6, j, k - 2), 0)  # the raw motion: j = d, f = 0
    d = j % 4
    scale = (1 << (j // 4)).to(tl.float32)  # 2^f, exactly
    delta = tl.where(d == 0, d0, tl.where(d == 1, d1, tl.where(d == 2, d2, d3)))
    angle = delta * scale
    angle = tl.where(k >= 6 + 4 * FREQS, angle + HALF_PI, angle)
    # `tl.sin` is libdevice's sinf, as PyTorch's sine (not `sin.approx`, poor at the high
    # frequencies' angles: tests/test_kernels_compile.py checks the PTX).
    features = tl.where(k >= 6, tl.sin(angle), delta)
    features = tl.where(k == 0, vis, tl.where(k == 1, conf, features))
    features = tl.where(valid[:, None] & (k < K), features, 0.0).to(w_ptr.dtype.element_ty)
    # The input layer's narrow columns ((C, K) weight) and the per-frame bias (T, C).
    kk = tl.arange(0, BLOCK_K)[:, None]
    for c0 in tl.static_range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        w = tl.load(w_ptr + cols[None, :] * K + kk, mask=(kk < K) & (cols[None, :] < C),
                    other=0.0)
        acc = tl.dot(features, w)
        bias = tl.load(bias_ptr + t[:, None] * C + cols[None, :],
                       mask=valid[:, None] & (cols[None, :] < C), other=0.0)
        acc += bias.to(tl.float32)
        tl.store(out_ptr + rows[:, None] * C + cols[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=valid[:, None] & (cols[None, :] < C))
