"""The 4D correlation as a CUDA kernel: tensor-core products first, the bilinear blend after.

The Triton kernel (`_corr_kernel`) blends each patch position's four bilinear neighbours from
the feature map before its product: 64 rows x 128 channels read four times and blended in fp32
on the CUDA cores, for every point, frame and level. Blending is linear, so it can come after
the product, on the volume, as the PyTorch path does; that needs a stencil over the product's
rows, which Triton cannot express. Here one warp takes one frame: it copies the 8 x 8 window of
features around the track (every corner of the 7 x 7 patch) to shared memory, 32 channels at a
time through two 4 KB buffers (16 KB a warp let only 8 warps share an SM, which could not hide
the copies' latency: 12 fit now, 16% faster on an H200), two chunks always in flight, the next
frame's first two while this frame is finished (4% faster than starting each frame afresh),
correlates it with the query patch in tensor-core products (`mma.sync`, bf16 in, fp32 sums)
and blends the fp32 products in registers. With the window's pixel ``(px, py)`` as
product row ``8 * px + py``, a product's x neighbour is in the same thread and its y neighbour
four lanes up (one shuffle). A block's warps share the query patch; volumes leave through
a warp's own staging space in shared memory as whole 16-byte stores.

`PAIRED` puts each frame on two warps instead, each taking half the query columns (4 and 3
of the 7 product tiles) of a window both copy half of and read whole: 126 registers instead
of 168, so 16 warps share an SM instead of 12, with three window buffers a pair (one named
barrier a chunk: both halves of this chunk arrived, and the previous chunk's buffer is read
and takes the chunk two ahead). Each
product sums the same terms in the same order, so the volumes are equal bit for bit.

bf16 only, on GPUs with bf16 tensor cores (compute capability 8.0 and up). Compiled once per
process with NVRTC (which PyTorch's CUDA wheels ship; ~0.6 s, so the cubin is kept in
``~/.cache/pointtrack/kernels`` for later processes) and launched through the CUDA driver with
ctypes: no compiler or CUDA toolkit needed. If any of that is missing or fails, `corr_triton`
keeps the Triton kernel.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path

import torch
from torch import Tensor

WARPS = 4  # warps per block
FRAMES_PER_BLOCK = 32  # frames a block's warps take turns over (the query patch is read once)
ROW = 2432  # a volume row: 49 x 49 values, zero-padded (corr_triton.ROW)
# A frame on a pair of warps, each on half the query columns (126 registers: four blocks an
# SM), or on one warp (168 registers: three blocks an SM).
PAIRED = int(os.environ.get("POINTTRACK_CORR_PAIRED", "0"))


def shared_bytes(warps: int, paired: bool = False) -> int:
    """Query rows (49 + zero padding), and per warp (per pair if ``paired``) two (three)
    32-channel buffers of the 8 x 8 window and a staged volume row."""
    if paired:
        return 56 * 256 + warps // 2 * (3 * 64 * 64 + ROW * 2)
    return 56 * 256 + warps * (2 * 64 * 64 + ROW * 2)


def min_blocks(warps: int, paired: bool = False) -> int:
    """Blocks an SM the registers are budgeted for: 16 warps paired, 12 single."""
    return max(1, (16 if paired else 12) // warps)

HELPERS = r"""
#define C 128
#define ROW 2432
#define STAGE (ROW * 2)  // a volume row in bytes, staged for whole 16-byte stores

__device__ __forceinline__ unsigned smem_u32(const void* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(dst), "l"(src));
}
__device__ __forceinline__ void cp_async_wait_all() {
    asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::: "memory");
}
__device__ __forceinline__ void ldsm_x4(unsigned* r, unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void ldsm_x2(unsigned* r, unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}
__device__ __forceinline__ void mma_bf16(float* d, const unsigned* a, const unsigned* b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ unsigned short to_bf16(float f) {
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;\n" : "=h"(h) : "f"(f));
    return h;
}

// Both kernels: their arguments, the block's pyramid level, the query patch to shared
// memory, where frame t's window starts, and the blend of one product column (8 queries) into
// the staged volume row.

// The pyramid's four levels (T, H >> l, W >> l, C) and their query patches (N, 49, C), bf16;
// the tracks (N, T, 2) in level-0 pixels; the volumes (see `correlate_volumes`).
#define CORRELATE_ARGS                                                                        \
    const unsigned short* __restrict__ f0, const unsigned short* __restrict__ f1,             \
    const unsigned short* __restrict__ f2, const unsigned short* __restrict__ f3,             \
    const unsigned short* __restrict__ q0, const unsigned short* __restrict__ q1,             \
    const unsigned short* __restrict__ q2, const unsigned short* __restrict__ q3,             \
    const float* __restrict__ xy, unsigned short* __restrict__ out,                           \
    int T, int H, int W, int stride_xn, int stride_on, int stride_ot, int frames_per_block

// The block's level (blockIdx.z): its feature map, the block's point's query rows, its size
// and its scale from level-0 pixels.
struct Level { const unsigned short* fmap; const unsigned short* query; int H, W; float scale; };
__device__ __forceinline__ Level block_level(
        const unsigned short* f0, const unsigned short* f1, const unsigned short* f2,
        const unsigned short* f3, const unsigned short* q0, const unsigned short* q1,
        const unsigned short* q2, const unsigned short* q3, int H, int W) {
    const int level = blockIdx.z;
    const unsigned short* fmap = level == 0 ? f0 : level == 1 ? f1 : level == 2 ? f2 : f3;
    const unsigned short* query = level == 0 ? q0 : level == 1 ? q1 : level == 2 ? q2 : q3;
    return Level{fmap, query + (size_t)blockIdx.x * 49 * C, H >> level, W >> level,
                 1.0f / (float)(1 << level)};
}

// Query rows of 256 bytes (128 channels); 16-byte chunk c of row r sits at chunk
// c ^ (r & 7), so the 8 rows an ldmatrix reads fall in different banks. 56 rows, 49 used.
__device__ __forceinline__ void load_query(unsigned char* qs, const unsigned short* query) {
    for (int i = threadIdx.x; i < 56 * 16; i += WARPS * 32) {
        const int r = i >> 4, c = i & 15;
        unsigned char* dst = qs + r * 256 + ((c ^ (r & 7)) << 4);
        if (r < 49) cp_async16(smem_u32(dst), query + r * C + c * 8);
        else *(uint4*)dst = make_uint4(0, 0, 0, 0);
    }
    cp_async_wait_all();
    __syncthreads();
}

// Where frame t's window starts: its feature row for this lane (window row y0 + g,
// clamped: border padding), its first column and the bilinear weights.
struct Window { const unsigned short* row; int x0; float ax, ay; };
__device__ __forceinline__ Window locate(const float* track, int t, const Level& lv, int g,
                                         int lc) {
    const float* p = track + 2 * t;
    const float cx = p[0] * lv.scale, cy = p[1] * lv.scale;
    const float fx = floorf(cx), fy = floorf(cy);
    const int y = min(max((int)fy - 3 + g, 0), lv.H - 1);
    return Window{lv.fmap + ((size_t)t * lv.H + y) * lv.W * C + lc * 8, (int)fx - 3, cx - fx,
                  cy - fy};
}

// acc[m][jj][0..1]: pixel (px = 2m, py = g), queries 8j + tq + {0, 1}; acc[m][jj][2..3]:
// pixel (2m + 1, g). Blend along x in the thread, along y by a shuffle.
template <int NJ>
__device__ __forceinline__ void blend_column(const float (&acc)[4][NJ][4], int jj, int j,
                                             float ax, float ay, int g, int tq,
                                             unsigned short* stage) {
#pragma unroll
    for (int px = 0; px < 7; ++px) {
        const int m = px >> 1;
        float h0, h1;
        if (px & 1) {
            h0 = (1.f - ax) * acc[m][jj][2] + ax * acc[m + 1][jj][0];
            h1 = (1.f - ax) * acc[m][jj][3] + ax * acc[m + 1][jj][1];
        } else {
            h0 = (1.f - ax) * acc[m][jj][0] + ax * acc[m][jj][2];
            h1 = (1.f - ax) * acc[m][jj][1] + ax * acc[m][jj][3];
        }
        const float n0 = __shfl_down_sync(0xffffffffu, h0, 4);
        const float n1 = __shfl_down_sync(0xffffffffu, h1, 4);
        const int q = j * 8 + tq;
        if (g < 7) {
            const int at = (px * 7 + g) * 49 + q;
            if (q < 49) stage[at] = to_bf16((1.f - ay) * h0 + ay * n0);
            if (q + 1 < 49) stage[at + 1] = to_bf16((1.f - ay) * h1 + ay * n1);
        }
    }
}
"""

SINGLE = r"""
extern "C" __global__ void __launch_bounds__(WARPS * 32, MIN_BLOCKS)
pointtrack_correlate(CORRELATE_ARGS) {
    extern __shared__ __align__(128) unsigned char smem[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int point = blockIdx.x, level = blockIdx.z;
    const Level lv = block_level(f0, f1, f2, f3, q0, q1, q2, q3, H, W);
    unsigned char* qs = smem;  // the query rows (`load_query`)
    unsigned char* win = smem + 56 * 256 + warp * 8192;  // two 4 KB window buffers
    load_query(qs, lv.query);
    const unsigned q_base = smem_u32(qs), win_base = smem_u32(win);
    const int g = lane >> 2, tq = (lane & 3) * 2;
    const int lc = lane & 3;  // the 16-byte piece of a row this lane copies: rows g + 8k
    const int t_end = min(T, (int)blockIdx.y * frames_per_block + frames_per_block);
    const float* track = xy + (size_t)point * stride_xn;
    auto window = [&](int t) { return locate(track, t, lv, g, lc); };
    // The window's channels go in four chunks of 32 through two buffers, always two chunks
    // in flight: while chunk s is multiplied, chunk s + 1 is on its way, and the copy two
    // ahead (chunks 2 and 3, then the next frame's 0 and 1) starts as soon as a buffer is
    // read. So the next frame's window arrives while this one is blended and written out: a
    // warp waits on memory about once a frame instead of every frame's first chunks.
    // Window row r = 8 px + py (pixel (x0 + px, y0 + py)) holds 64 bytes; its 16-byte piece
    // c sits at piece c ^ ((r >> 1) & 3), so an ldmatrix's 8 rows fall in different banks.
    // Every step commits one group (empty past the last frame): wait_group 1 then always
    // means "the chunk about to be read has arrived".
    auto copy_chunk = [&](unsigned buf, const Window& w, int s) {  // this lane's pieces
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            const int r = g + 8 * k, x = min(max(w.x0 + k, 0), lv.W - 1);
            cp_async16(buf + r * 64 + ((lc ^ ((r >> 1) & 3)) << 4),
                       w.row + (size_t)x * C + s * 32);
        }
    };
    auto commit = [] { asm volatile("cp.async.commit_group;\n" ::: "memory"); };
    int t = blockIdx.y * frames_per_block + warp;
    Window cur = t < t_end ? window(t) : Window{nullptr, 0, 0.f, 0.f};
    if (t < t_end) { copy_chunk(win_base, cur, 0); }
    commit();
    if (t < t_end) { copy_chunk(win_base + 4096, cur, 1); }
    commit();
    for (; t < t_end; t += WARPS) {
        const bool more = t + WARPS < t_end;
        const Window next = more ? window(t + WARPS) : cur;  // read early: its latency hides
        float acc[4][7][4];
#pragma unroll
        for (int m = 0; m < 4; ++m)
#pragma unroll
            for (int j = 0; j < 7; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[m][j][e] = 0.f;
#pragma unroll 1
        for (int s = 0; s < 4; ++s) {
            const unsigned buf = win_base + (s & 1) * 4096;
            asm volatile("cp.async.wait_group 1;\n" ::: "memory");
            __syncwarp();
#pragma unroll
            for (int kl = 0; kl < 2; ++kl) {
                unsigned a[4][4];
#pragma unroll
                for (int m = 0; m < 4; ++m) {
                    const int r = m * 16 + (lane & 15), c = kl * 2 + (lane >> 4);
                    ldsm_x4(a[m], buf + r * 64 + ((c ^ ((r >> 1) & 3)) << 4));
                }
#pragma unroll
                for (int j = 0; j < 7; ++j) {
                    unsigned b[2];
                    const int r = j * 8 + (lane & 7), c = (2 * s + kl) * 2 + ((lane >> 3) & 1);
                    ldsm_x2(b, q_base + r * 256 + ((c ^ (r & 7)) << 4));
#pragma unroll
                    for (int m = 0; m < 4; ++m) mma_bf16(acc[m][j], a[m], b);
                }
            }
            __syncwarp();  // every lane has read the buffer: it can be refilled
            if (s < 2) copy_chunk(buf, cur, s + 2);
            else if (more) copy_chunk(buf, next, s - 2);
            commit();
        }
        unsigned short* stage = (unsigned short*)(smem + 56 * 256 + WARPS * 8192 + warp * STAGE);
#pragma unroll
        for (int j = 0; j < 7; ++j) blend_column(acc, j, j, cur.ax, cur.ay, g, tq, stage);
        if (lane < ROW - 2401) stage[2401 + lane] = 0;
        __syncwarp();
        uint4* dst = (uint4*)(out + (size_t)point * stride_on + (size_t)t * stride_ot
                              + level * ROW);
        const uint4* src = (const uint4*)stage;
        for (int i = lane; i < ROW * 2 / 16; i += 32) dst[i] = src[i];
        __syncwarp();  // the copy is read before the next frame's volume overwrites it
        cur = next;
    }
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}
"""

PAIRED_KERNEL = r"""
#define PAIRS (WARPS / 2)
#define WIN (3 * 4096)  // three 4 KB buffers of 32 channels a pair

extern "C" __global__ void __launch_bounds__(WARPS * 32, MIN_BLOCKS)
pointtrack_correlate(CORRELATE_ARGS) {
    extern __shared__ __align__(128) unsigned char smem[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int pair = warp >> 1, half = warp & 1;
    const int point = blockIdx.x, level = blockIdx.z;
    const Level lv = block_level(f0, f1, f2, f3, q0, q1, q2, q3, H, W);
    unsigned char* qs = smem;
    unsigned char* win = smem + 56 * 256 + pair * (WIN + STAGE);
    unsigned short* stage = (unsigned short*)(win + WIN);
    load_query(qs, lv.query);
    const unsigned q_base = smem_u32(qs), win_base = smem_u32(win);
    const int g = lane >> 2, tq = (lane & 3) * 2;
    const int lc = lane & 3;
    const int t_end = min(T, (int)blockIdx.y * frames_per_block + frames_per_block);
    const float* track = xy + (size_t)point * stride_xn;
    auto window = [&](int t) { return locate(track, t, lv, g, lc); };
    auto copy_chunk = [&](unsigned buf, const Window& w, int s) {  // half the rows a warp
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
            const int k = 4 * half + kk;
            const int r = g + 8 * k, x = min(max(w.x0 + k, 0), lv.W - 1);
            cp_async16(buf + r * 64 + ((lc ^ ((r >> 1) & 3)) << 4),
                       w.row + (size_t)x * C + s * 32);
        }
    };
    auto commit = [] { asm volatile("cp.async.commit_group;\n" ::: "memory"); };
    auto pair_sync = [&] { asm volatile("bar.sync %0, 64;\n" :: "r"(pair + 1) : "memory"); };
    int t = blockIdx.y * frames_per_block + pair;
    Window cur = t < t_end ? window(t) : Window{nullptr, 0, 0.f, 0.f};
    if (t < t_end) { copy_chunk(win_base, cur, 0); }
    commit();
    if (t < t_end) { copy_chunk(win_base + 4096, cur, 1); }
    commit();
    int c = 0;  // chunks so far: chunk c sits in buffer c % 3
    for (; t < t_end; t += PAIRS) {
        const bool more = t + PAIRS < t_end;
        const Window next = more ? window(t + PAIRS) : cur;
        float acc[4][4][4];
#pragma unroll
        for (int m = 0; m < 4; ++m)
#pragma unroll
            for (int j = 0; j < 4; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[m][j][e] = 0.f;
#pragma unroll 1
        for (int s = 0; s < 4; ++s, ++c) {
            const unsigned buf = win_base + (c % 3) * 4096;
            asm volatile("cp.async.wait_group 1;\n" ::: "memory");
            pair_sync();  // both halves of chunk c arrived; chunk c - 1's buffer is read
            const unsigned nbuf = win_base + ((c + 2) % 3) * 4096;
            if (s < 2) copy_chunk(nbuf, cur, s + 2);
            else if (more) copy_chunk(nbuf, next, s - 2);
            commit();
#pragma unroll
            for (int kl = 0; kl < 2; ++kl) {
                unsigned a[4][4];
#pragma unroll
                for (int m = 0; m < 4; ++m) {
                    const int r = m * 16 + (lane & 15), cc = kl * 2 + (lane >> 4);
                    ldsm_x4(a[m], buf + r * 64 + ((cc ^ ((r >> 1) & 3)) << 4));
                }
#pragma unroll
                for (int jj = 0; jj < 4; ++jj) {
                    const int j = 4 * half + jj;
                    if (j < 7) {
                        unsigned b[2];
                        const int r = j * 8 + (lane & 7), cc = (2 * s + kl) * 2 + ((lane >> 3) & 1);
                        ldsm_x2(b, q_base + r * 256 + ((cc ^ (r & 7)) << 4));
#pragma unroll
                        for (int m = 0; m < 4; ++m) mma_bf16(acc[m][jj], a[m], b);
                    }
                }
            }
        }
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) {
            const int j = 4 * half + jj;
            if (j < 7) blend_column(acc, jj, j, cur.ax, cur.ay, g, tq, stage);
        }
        if (half == 0 && lane < ROW - 2401) stage[2401 + lane] = 0;
        pair_sync();  // the pair's halves of the volume are staged
        uint4* dst = (uint4*)(out + (size_t)point * stride_on + (size_t)t * stride_ot
                              + level * ROW);
        const uint4* src = (const uint4*)stage;
        for (int i = lane + 32 * half; i < ROW * 2 / 16; i += 64) dst[i] = src[i];
        // The next stage write comes after the next frame's first pair_sync, which both
        // warps reach only after this copy.
        cur = next;
    }
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}
"""
SOURCE = HELPERS + SINGLE
PAIRED_SOURCE = HELPERS + PAIRED_KERNEL


class _Library:
    """NVRTC and the CUDA driver, through ctypes (the functions used here only)."""

    def __init__(self, nvrtc: ctypes.CDLL | None = None, driver: bool = True) -> None:
        # Without the driver (no GPU) it still compiles: CI checks the kernels that way.
        self.cuda = ctypes.CDLL("libcuda.so.1") if driver else None
        self.nvrtc = nvrtc or _load_nvrtc()
        self.nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p

    def compile(self, source: str, arch: str) -> bytes:
        """``source`` compiled for ``arch`` (e.g. ``sm_90``): a cubin, from the disk cache when
        this NVRTC compiled the same source before."""
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._nvrtc(self.nvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)))
        key = hashlib.sha256(f"{major.value}.{minor.value} {arch}\n{source}".encode()).hexdigest()
        cached = _cache_dir() / f"correlate-{key[:24]}.cubin"
        try:
            return cached.read_bytes()
        except OSError:
            pass
        cubin = self._compile(source, arch)
        try:  # written whole, then renamed: a concurrent reader never sees half a file
            cached.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=cached.parent, delete=False) as f:
                f.write(cubin)
            os.replace(f.name, cached)
        except OSError:
            pass
        return cubin

    def _compile(self, source: str, arch: str) -> bytes:
        nv, prog = self.nvrtc, ctypes.c_void_p()
        self._nvrtc(nv.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"corr.cu", 0,
                                          None, None))
        try:
            options = [f"--gpu-architecture={arch}".encode(), b"--std=c++17"]
            status = nv.nvrtcCompileProgram(prog, len(options),
                                            (ctypes.c_char_p * len(options))(*options))
            if status != 0:
                size = ctypes.c_size_t()
                nv.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
                log = ctypes.create_string_buffer(size.value)
                nv.nvrtcGetProgramLog(prog, log)
                raise RuntimeError(f"NVRTC: {log.value.decode(errors='replace')[:2000]}")
            size = ctypes.c_size_t()
            self._nvrtc(nv.nvrtcGetCUBINSize(prog, ctypes.byref(size)))
            cubin = ctypes.create_string_buffer(size.value)
            self._nvrtc(nv.nvrtcGetCUBIN(prog, cubin))
            return cubin.raw
        finally:
            nv.nvrtcDestroyProgram(ctypes.byref(prog))

    def _nvrtc(self, status: int) -> None:
        if status != 0:
            raise RuntimeError(f"NVRTC: {self.nvrtc.nvrtcGetErrorString(status).decode()}")

    def check(self, status: int) -> None:
        if status != 0:
            text = ctypes.c_char_p()
            self.cuda.cuGetErrorString(status, ctypes.byref(text))
            raise RuntimeError(f"CUDA driver: {(text.value or b'error %d' % status).decode()}")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pointtrack" / "kernels"


def _load_nvrtc() -> ctypes.CDLL:
    """NVRTC of PyTorch's CUDA version: by name (loaded already, or on the library path), else
    from the NVIDIA pip wheels PyTorch depends on."""
    major = (torch.version.cuda or "12").split(".")[0]
    names = [f"libnvrtc.so.{major}", "libnvrtc.so"]
    for base in sys.path:
        for sub in ("nvidia/cuda_nvrtc/lib", f"nvidia/cu{major}/lib"):
            names += sorted(glob.glob(os.path.join(base, sub, f"libnvrtc.so.{major}*")))
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise OSError(f"NVRTC (libnvrtc.so.{major}) not found")


class _Kernel:
    """The compiled kernel on one device."""

    def __init__(self, lib: _Library, cubin: bytes, device: torch.device, warps: int,
                 paired: bool = False) -> None:
        self.lib, self.warps, self.shared = lib, warps, shared_bytes(warps, paired)
        with torch.cuda.device(device):
            # The device's primary context (PyTorch's), current on this thread: the runtime
            # makes it current lazily, so in a process that has not used the GPU yet it may
            # not be.
            context = ctypes.c_void_p()
            lib.check(lib.cuda.cuCtxGetCurrent(ctypes.byref(context)))
            if not context.value:
                ordinal = ctypes.c_int()
                lib.check(lib.cuda.cuDeviceGet(ctypes.byref(ordinal), device.index))
                lib.check(lib.cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), ordinal))
                lib.check(lib.cuda.cuCtxSetCurrent(context))
            self.module, self.function = ctypes.c_void_p(), ctypes.c_void_p()
            lib.check(lib.cuda.cuModuleLoadData(ctypes.byref(self.module), cubin))
            lib.check(lib.cuda.cuModuleGetFunction(ctypes.byref(self.function), self.module,
                                                   b"pointtrack_correlate"))
            max_dynamic_shared = 8  # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
            lib.check(lib.cuda.cuFuncSetAttribute(self.function, max_dynamic_shared,
                                                  self.shared))

    def __call__(self, grid: tuple[int, int, int], args: list) -> None:
        values = [ctypes.c_void_p(a.data_ptr()) if isinstance(a, Tensor) else ctypes.c_int(a)
                  for a in args]
        pointers = (ctypes.c_void_p * len(values))(
            *[ctypes.cast(ctypes.byref(v), ctypes.c_void_p) for v in values])
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        self.lib.check(self.lib.cuda.cuLaunchKernel(
            self.function, *grid, 32 * self.warps, 1, 1, self.shared, stream, pointers, None))


_lock = threading.RLock()
_cubins: dict[tuple[str, int, bool], bytes | Exception] = {}
_kernels: dict[tuple[int, int, bool], _Kernel | None] = {}


def _arch(device: torch.device) -> str | None:
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}" if major >= 8 else None  # bf16 mma.sync: Ampere and later


def compile_for(arch: str, warps: int | None = None, paired: bool | None = None) -> bytes:
    """The kernel's cubin for ``arch``, compiled once per process (CPU work only: safe on a
    thread while another captures CUDA graphs). Raises what compiling raised."""
    warps = warps or WARPS
    paired = bool(PAIRED if paired is None else paired)
    key = (arch, warps, paired)
    with _lock:
        if key not in _cubins:
            try:
                defines = (f"#define WARPS {warps}\n"
                           f"#define MIN_BLOCKS {min_blocks(warps, paired)}\n")
                source = PAIRED_SOURCE if paired else SOURCE
                _cubins[key] = _Library().compile(defines + source, arch)
            except Exception as e:  # kept: every later call raises it again, cheaply
                _cubins[key] = e
        cubin = _cubins[key]
    if isinstance(cubin, Exception):
        raise cubin
    return cubin


def kernel(device: torch.device, warps: int | None = None,
           paired: bool | None = None) -> _Kernel | None:
    """The kernel on ``device``, or None where it cannot run (no NVRTC, an older GPU, a
    failed compile)."""
    warps = warps or WARPS
    paired = bool(PAIRED if paired is None else paired)
    index = device.index if device.index is not None else torch.cuda.current_device()
    key = (index, warps, paired)
    if key not in _kernels:
        with _lock:
            if key not in _kernels:
                try:
                    at = torch.device("cuda", index)
                    arch = _arch(at)
                    _kernels[key] = (None if arch is None else _Kernel(
                        _Library(), compile_for(arch, warps, paired), at, warps, paired))
                except Exception as e:  # the Triton kernel does the work instead
                    logging.getLogger(__name__).info("CUDA correlation kernel unavailable: %s", e)
                    _kernels[key] = None
    return _kernels[key]


def correlate_volumes(pyramid: list[Tensor], xy: Tensor, support: list[Tensor], out: Tensor,
                      warps: int | None = None, frames_per_block: int | None = None,
                      paired: bool | None = None) -> bool:
    """Writes `corr_triton.correlate_volumes`'s volumes into ``out (n, T, 4, ROW)`` and returns
    True, or returns False (nothing written) where this kernel cannot run. bf16 tensors,
    contiguous, 128 channels."""
    n, T, _ = xy.shape
    _, H, W, _ = pyramid[0].shape
    frames = min(T, frames_per_block or FRAMES_PER_BLOCK)
    sizes = [T, H, W, xy.stride(0), out.stride(0), out.stride(1), frames]
    if max(sizes) >= 2**31:  # the kernel takes 32-bit sizes (offsets are 64-bit inside)
        return False
    run = kernel(xy.device, warps, paired)
    if run is None:
        return False
    with torch.cuda.device(xy.device):
        run((n, -(-T // frames), 4), [*pyramid, *support, xy, out, *sizes])
    return True
