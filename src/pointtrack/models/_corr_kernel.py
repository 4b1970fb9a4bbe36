"""The Triton kernel behind `corr_triton.correlate_volumes` (imported on first GPU use, so
CPU runs never load Triton)."""

import triton
import triton.language as tl


@triton.jit
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
    rows = tl.arange(0, 64)  # patch position p = px * P + py (49 used) / window pixel
    chans = tl.arange(0, C)
    # The query patch, rows past 49 zero.
    q = tl.load(
        query_ptr + point * (P * P * C) + rows[:, None] * C + chans[None, :],
        mask=rows[:, None] < P * P, other=0.0,
    )
    # Window pixels w = wx * 8 + wy (8x8 covers the 7x7 patch and its bilinear neighbours).
    wx, wy = rows // 8, rows % 8
    px, py = rows // P, rows % P
    for dt in range(BLOCK_T):
        t = t0 + dt
        if t < T:
            pos = xy_ptr + point * stride_xn + t * 2
            cx = tl.load(pos) * scale
            cy = tl.load(pos + 1) * scale
            fx0, fy0 = tl.floor(cx), tl.floor(cy)
            ax, ay = cx - fx0, cy - fy0
            # Whole-pixel indices clamped to the map: border padding of the coordinates.
            x = tl.minimum(tl.maximum(fx0.to(tl.int32) - R + wx, 0), Wl - 1)
            y = tl.minimum(tl.maximum(fy0.to(tl.int32) - R + wy, 0), Hl - 1)
            base = fmap_ptr + t.to(tl.int64) * (Hl * Wl * C)
            window = tl.load(base + ((y * Wl + x) * C)[:, None] + chans[None, :])
            # Bilinear weights as a matrix: patch p takes window pixels (px + i, py + j).
            kx = tl.where(wx[None, :] == px[:, None], 1 - ax,
                          tl.where(wx[None, :] == px[:, None] + 1, ax, 0.0))
            ky = tl.where(wy[None, :] == py[:, None], 1 - ay,
                          tl.where(wy[None, :] == py[:, None] + 1, ay, 0.0))
            blend = (kx * ky).to(window.dtype)  # (64 patch, 64 window)
            patch = tl.dot(blend, window, input_precision=PRECISION)  # (64, C) fp32
            corr = tl.dot(patch.to(q.dtype), tl.trans(q), input_precision=PRECISION)
            dst = out_ptr + point * stride_on + t * stride_ot + level * ROW_LEN
            cols = rows[:, None] * (P * P) + rows[None, :]
            valid = (rows[:, None] < P * P) & (rows[None, :] < P * P)
            tl.store(dst + cols, corr.to(out_ptr.dtype.element_ty), mask=valid)
            pad = tl.arange(0, 32)
            tl.store(dst + P * P * P * P + pad, tl.zeros((32,), out_ptr.dtype.element_ty),
                     mask=pad < ROW_LEN - P * P * P * P)


@triton.jit
def _correlate_kernel_v2(
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


@triton.jit
def _correlate_kernel_v3(
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
    q = tl.load(
        query_ptr + point * (P * P * C) + rows[:, None] * C + chans[None, :],
        mask=rows[:, None] < P * P, other=0.0,
    )
    # Correlate the 8x8 window with the query patch first (the blend is linear), then blend
    # the 64 x 49 result to the 7 x 7 patch positions: a product with K = 64, not C = 128.
    wx, wy = rows // 8, rows % 8
    px, py = rows // P, rows % P
    for dt in range(BLOCK_T):
        t = t0 + dt
        if t < T:
            pos = xy_ptr + point * stride_xn + t * 2
            cx = tl.load(pos) * scale
            cy = tl.load(pos + 1) * scale
            fx0, fy0 = tl.floor(cx), tl.floor(cy)
            ax, ay = cx - fx0, cy - fy0
            x = tl.minimum(tl.maximum(fx0.to(tl.int32) - R + wx, 0), Wl - 1)
            y = tl.minimum(tl.maximum(fy0.to(tl.int32) - R + wy, 0), Hl - 1)
            base = fmap_ptr + t.to(tl.int64) * (Hl * Wl * C)
            window = tl.load(base + ((y * Wl + x) * C)[:, None] + chans[None, :])
            g = tl.dot(window, tl.trans(q), input_precision=PRECISION)  # (64 pixels, 64) fp32
            kx = tl.where(wx[None, :] == px[:, None], 1 - ax,
                          tl.where(wx[None, :] == px[:, None] + 1, ax, 0.0))
            ky = tl.where(wy[None, :] == py[:, None], 1 - ay,
                          tl.where(wy[None, :] == py[:, None] + 1, ay, 0.0))
            if PRECISION == "ieee":
                corr = tl.dot(kx * ky, g, input_precision=PRECISION)
            else:  # fp16 keeps 3 more bits than bf16; both factors lie within its range
                corr = tl.dot((kx * ky).to(tl.float16), g.to(tl.float16))
            dst = out_ptr + point * stride_on + t * stride_ot + level * ROW_LEN
            cols = rows[:, None] * (P * P) + rows[None, :]
            valid = (rows[:, None] < P * P) & (rows[None, :] < P * P)
            tl.store(dst + cols, corr.to(out_ptr.dtype.element_ty), mask=valid)
            pad = tl.arange(0, 32)
            tl.store(dst + P * P * P * P + pad, tl.zeros((32,), out_ptr.dtype.element_ty),
                     mask=pad < ROW_LEN - P * P * P * P)
