"""Micro-measurements that decide what to optimise next (issue 5): the encoder eager against
torch.compile (with its compile time), one transformer block eager against compiled, and
attention of 64 virtual tracks over many points in one frame against many frames per call.

    python benchmarks/gpu_probe.py --out probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def bench(fn, reps: int = 20) -> float:
    """Median milliseconds of ``fn()`` with CUDA events, after two warm-ups."""
    fn()
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def encoder(report: dict) -> None:
    from pointtrack.models.cotracker3 import CoTracker3Offline

    model = CoTracker3Offline().cuda().bfloat16().eval()
    video = torch.randint(0, 255, (1, 82, 3, 384, 512), device="cuda").float()
    torch.backends.cudnn.benchmark = True
    with torch.inference_mode():
        report["encode_eager_ms"] = bench(lambda: model.encode(video), 5)
        x = torch.randn(8, 3, 384, 512, device="cuda").bfloat16()
        report["fnet8_eager_ms"] = bench(lambda: model.fnet(x))
        t = time.perf_counter()
        compiled = torch.compile(model.fnet)
        compiled(x)
        torch.cuda.synchronize()
        report["fnet8_compile_s"] = time.perf_counter() - t
        report["fnet8_compiled_ms"] = bench(lambda: compiled(x))
        ref = model.fnet(x).float()
        report["fnet8_compiled_relerr"] = float((compiled(x).float() - ref).norm() / ref.norm())
    print(report, flush=True)


def block_fn(x, Wq, bq, Wkv, bkv, Wo, bo, W1, b1, W2, b2):
    """A pre-norm time-attention block on ``x (B, T, C)``, functional (weights as inputs)."""
    B, T, C = x.shape
    h = F.layer_norm(x, (C,), eps=1e-6)
    q = F.linear(h, Wq, bq).view(B, T, 8, 48).transpose(1, 2)
    k, v = (t.view(B, T, 8, 48).transpose(1, 2) for t in F.linear(h, Wkv, bkv).chunk(2, -1))
    o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, C)
    x = x + F.linear(o, Wo, bo)
    h = F.layer_norm(x, (C,), eps=1e-6)
    return x + F.linear(F.gelu(F.linear(h, W1, b1), approximate="tanh"), W2, b2)


def transformer_block(report: dict) -> None:
    from pointtrack.models.cotracker3 import AttnBlock

    block = AttnBlock(384, 8, 4.0).cuda().bfloat16().eval()
    x = torch.randn(799, 82, 384, device="cuda").bfloat16()
    weights = [block.attn.to_q.weight, block.attn.to_q.bias, block.attn.to_kv.weight,
               block.attn.to_kv.bias, block.attn.to_out.weight, block.attn.to_out.bias,
               block.mlp.fc1.weight, block.mlp.fc1.bias, block.mlp.fc2.weight, block.mlp.fc2.bias]
    with torch.inference_mode():
        report["block_eager_inplace_ms"] = bench(lambda: block(x.clone()))
        report["clone_ms"] = bench(lambda: x.clone())
        report["block_functional_ms"] = bench(lambda: block_fn(x, *weights))
        t = time.perf_counter()
        compiled = torch.compile(block_fn, dynamic=True)
        compiled(x, *weights)
        torch.cuda.synchronize()
        report["block_compile_s"] = time.perf_counter() - t
        report["block_compiled_ms"] = bench(lambda: compiled(x, *weights))
        y = torch.randn(500, 82, 384, device="cuda").bfloat16()
        t = time.perf_counter()
        compiled(y, *weights)
        torch.cuda.synchronize()
        report["block_recompile_other_shape_s"] = time.perf_counter() - t
        flat = x.view(-1, 384)
        report["layernorm_65k_ms"] = bench(lambda: F.layer_norm(flat, (384,), eps=1e-6))
        report["add_65k_ms"] = bench(lambda: flat + flat)
        w1 = block.mlp.fc1.weight
        report["fc1_gelu_epilogue_65k_ms"] = bench(lambda: torch._addmm_activation(
            block.mlp.fc1.bias, flat, w1.t(), use_gelu=True))
        report["fc1_65k_ms"] = bench(lambda: F.linear(flat, w1, block.mlp.fc1.bias))
    print(report, flush=True)


def virtual_attention(report: dict) -> None:
    """Virtual tracks (64 queries) attending over N points per frame."""
    for n in (2500, 40000):
        q = torch.randn(16, 8, 64, 48, device="cuda").bfloat16()
        k = torch.randn(16, 8, n, 48, device="cuda").bfloat16()
        v = torch.randn(16, 8, n, 48, device="cuda").bfloat16()
        with torch.inference_mode():
            one = bench(lambda q=q, k=k, v=v: [
                F.scaled_dot_product_attention(q[i:i + 1], k[i:i + 1], v[i:i + 1])
                for i in range(16)])
            batched = bench(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v))
        report[f"v2p_attn_n{n}_16x1frame_ms"] = one
        report[f"v2p_attn_n{n}_16frames_ms"] = batched
    print(report, flush=True)


def attention_backends(report: dict) -> None:
    """Each SDPA backend on the transformer's attention shapes (bf16, 8 heads of 48): time
    attention over 16 frames (online) and 82 (offline), points reading 64 virtual tracks and
    virtual tracks reading 40,064 points (online grid 200, one frame)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    shapes = {"time16": (4096, 16, 16), "time82": (799, 82, 82),
              "p2v": (1, 40064, 64), "v2p": (16, 64, 40064)}
    backends = {"default": None, "cudnn": SDPBackend.CUDNN_ATTENTION,
                "flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                "math": SDPBackend.MATH}
    out = {}
    for name, (B, L, S) in shapes.items():
        q = torch.randn(B, L, 8, 48, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
        k = torch.randn(B, S, 8, 48, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
        v = torch.randn_like(k)
        for backend_name, backend in backends.items():
            def call(q=q, k=k, v=v):
                return F.scaled_dot_product_attention(q, k, v)
            try:
                if backend is None:
                    ms = bench(call)
                else:
                    with sdpa_kernel([backend]):
                        ms = bench(call)
            except RuntimeError as e:
                ms = f"failed: {str(e)[:80]}"
            out[f"{name}-{backend_name}"] = ms
            print(name, backend_name, ms, flush=True)
        if L <= 32 and L == S:
            from pointtrack.models.attention import short_attention

            q2, kv2 = q.transpose(1, 2).reshape(B, L, 384), torch.cat([k, v], 1).transpose(
                1, 2).reshape(B, L, 768)
            for warps in (4, 8):
                ms = bench(lambda w=warps, a=q2, b=kv2: short_attention(a, b, 8, 48, num_warps=w))
                out[f"{name}-triton-w{warps}"] = ms
                print(name, "triton", warps, ms, flush=True)
    report["attention_backends"] = out


def host_copies(report: dict) -> None:
    """Ways to get 8 frames of 384x512 uint8 (4.7 MB) from NumPy onto the GPU (ms, host
    wall time): pin_memory per chunk, a copy into a kept pinned buffer, a pageable copy."""
    import numpy as np

    frames = np.random.default_rng(0).integers(0, 255, (82, 384, 512, 3), dtype=np.uint8)
    kept = torch.empty(8 * 384 * 512 * 3, dtype=torch.uint8, pin_memory=True)
    ways = {
        "pin_memory": lambda i: torch.from_numpy(frames[i : i + 8]).pin_memory(),
        "copy_into_kept_pinned": lambda i: np.copyto(kept.view(8, 384, 512, 3).numpy(),
                                                     frames[i : i + 8]),
        "pageable_to_cuda": lambda i: torch.from_numpy(frames[i : i + 8]).cuda(),
    }
    out = {}
    for name, fn in ways.items():
        fn(0)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(0, 80, 8):
            fn(i)
        torch.cuda.synchronize()
        out[name] = (time.perf_counter() - t) * 1e3 / 10
        print("host copy", name, out[name], flush=True)
    report["host_copies_ms_per_chunk"] = out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path)
    p.add_argument("--parts", default="attention,block,encoder")
    args = p.parse_args()
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    parts = {"encoder": encoder, "block": transformer_block, "attention": virtual_attention,
             "backends": attention_backends, "copies": host_copies}
    for name in args.parts.split(","):
        try:
            parts[name](report)
        except Exception as e:  # a probe that fails says why and the others still run
            report[f"{name}_error"] = repr(e)[:500]
            print(name, "failed:", repr(e)[:500], flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
