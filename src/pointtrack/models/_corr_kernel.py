"""The Triton kernel behind `corr_triton.correlate_volumes` (imported on first GPU use, so
CPU runs never load Triton)."""

import triton
import triton.language as tl


# T and the xy stride change with every video length: one compiled variant for all of them.
@triton.jit(do_not_specialize=["T", "stride_xn"])
def _correlate_kernel(
    f0, f1, f2, f3,  # pyramid levels (T, H_l, W_l, C), contiguous
    q0, q1, q2, q3,  # query patches per level (n, 49, C), contiguous
    xy_ptr, out_ptr,
    T, H, W,  # level-0 size; level l is (H >> l, W >> l)
    stride_xn,  # xy (n, T, 2)
    stride_on, stride_ot,  # out (n, T, levels, ROW)
    C: tl.constexpr, R: tl.constexpr, ROW_LEN: tl.constexpr, BLOCK_T: tl.constexpr,
    PRECISION: tl.constexpr,
):
    P: tl.constexpr = 2 * R + 1
    # Points vary fastest: neighbouring programs read the same frame (shared in L2).
    point = tl.program_id(0).to(tl.int64)
    t0 = tl.program_id(1) * BLOCK_T
    level = tl.program_id(2)
    if level == 0:
        fmap_ptr, query_ptr = f0, q0
    elif level == 1:
        fmap_ptr, query_ptr = f1, q1
    elif level == 2:
        fmap_ptr, query_ptr = f2, q2
    else:
        fmap_ptr, query_ptr = f3, q3
    Hl, Wl = H >> level, W >> level
    scale = 1.0 / (1 << level).to(tl.float32)
    rows = tl.arange(0, 64)
    chans = tl.arange(0, C)
    # The query patch, rows past 49 zero; read once for BLOCK_T frames.
    q = tl.load(
        query_ptr + point * (P * P * C) + rows[:, None] * C + chans[None, :],
        mask=rows[:, None] < P * P, other=0.0,
    )
    # Patch positions on an 8x8 lattice, row r = px * 8 + py (the 7x7 used): each position's
    # four bilinear neighbours are loaded straight from the map (they share cache lines) and
    # blended in fp32; one product with the query patch gives the volume.
    px, py = rows // 8, rows % 8
    used = (px < P) & (py < P)
    for dt in range(BLOCK_T):
        t = t0 + dt
        if t < T:
            pos = xy_ptr + point * stride_xn + t * 2
            cx = tl.load(pos) * scale
            cy = tl.load(pos + 1) * scale
            fx0, fy0 = tl.floor(cx), tl.floor(cy)
            ax, ay = cx - fx0, cy - fy0
            # Whole-pixel indices clamped to the map: border padding of the coordinates.
            x0 = fx0.to(tl.int32) - R + px
            y0 = fy0.to(tl.int32) - R + py
            xa = tl.minimum(tl.maximum(x0, 0), Wl - 1)
            xb = tl.minimum(tl.maximum(x0 + 1, 0), Wl - 1)
            ya = tl.minimum(tl.maximum(y0, 0), Hl - 1) * Wl
            yb = tl.minimum(tl.maximum(y0 + 1, 0), Hl - 1) * Wl
            base = fmap_ptr + t.to(tl.int64) * (Hl * Wl * C) + chans[None, :]
            m = used[:, None]
            patch = tl.load(base + ((ya + xa) * C)[:, None], mask=m, other=0.0).to(tl.float32) \
                * ((1 - ax) * (1 - ay))
            patch += tl.load(base + ((ya + xb) * C)[:, None], mask=m, other=0.0).to(tl.float32) \
                * (ax * (1 - ay))
            patch += tl.load(base + ((yb + xa) * C)[:, None], mask=m, other=0.0).to(tl.float32) \
                * ((1 - ax) * ay)
            patch += tl.load(base + ((yb + xb) * C)[:, None], mask=m, other=0.0).to(tl.float32) \
                * (ax * ay)
            # (64 positions, 64 query rows)
            corr = tl.dot(patch.to(q.dtype), tl.trans(q), input_precision=PRECISION)
            dst = out_ptr + point * stride_on + t * stride_ot + level * ROW_LEN
            cols = (px * P + py)[:, None] * (P * P) + rows[None, :]
            tl.store(dst + cols, corr.to(out_ptr.dtype.element_ty),
                     mask=used[:, None] & (rows[None, :] < P * P))
            pad = tl.arange(0, 32)
            tl.store(dst + P * P * P * P + pad, tl.zeros((32,), out_ptr.dtype.element_ty),
                     mask=pad < ROW_LEN - P * P * P * P)
