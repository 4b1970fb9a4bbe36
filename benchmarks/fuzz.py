"""Fuzz the CLI with broken videos, prompts, options and checkpoints.

Every case runs the real CLI (`pointtrack track ...`, `pointtrack info ...`) and must end in

- **ok**: exit 0, the outputs there and readable, no temp file left; or
- **clean error**: exit 2, exactly one line ``pointtrack: error: ...`` on stderr, no
  traceback, no output file, no temp file;

and in both, every input file unchanged (hashed before and after) and nothing new beside
them. Anything else (a traceback, a crash, a hang past the timeout, another exit code, several
lines, a partial output, a changed input, a pickle's payload that ran) is **BAD**.

Inputs are generated here with PyAV and OpenCV from a fixed seed. Cases run in a pool of
workers: by default each worker is one long-lived interpreter that calls
``pointtrack.cli.main(argv)`` with its file descriptors 1 and 2 redirected (what a subprocess
would print, FFmpeg's own messages included); ``--subprocess`` runs each case as a fresh
``python -m pointtrack`` instead (what the CI subset in tests/test_fuzz.py does).

    python benchmarks/fuzz.py                      # all cases, 2 workers
    python benchmarks/fuzz.py --subprocess --limit 40
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

KINDS = ["video", "prompt", "options", "checkpoint"]
TIMEOUT_S = 120.0
MEMORY_LIMIT = 6 * 2**30  # address space per worker: a runaway allocation fails, not the host


@dataclass
class Case:
    """One CLI run: ``argv`` after ``pointtrack``, with ``{in}`` for the inputs directory."""

    kind: str
    name: str
    argv: list[str]
    inputs: list[str]  # files of the inputs directory this case reads
    outputs: list[str] = field(default_factory=list)  # files it writes when it succeeds
    marker: str | None = None  # a file that must never appear (a pickle's payload)
    timeout: float = TIMEOUT_S


@dataclass
class Result:
    kind: str
    name: str
    argv: list[str]
    outcome: str  # "ok", "clean error" or "BAD"
    why: str  # the error line, or what made it BAD
    seconds: float


# -- Inputs ---------------------------------------------------------------------------------------


def texture(num_frames: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 frames of a blurred random texture moving 2 px right, 1 down."""
    import cv2

    W, H = size
    rng = np.random.default_rng(seed)
    tex = (rng.random((H + num_frames + 8, W + 2 * num_frames + 8, 3)) * 255).astype(np.uint8)
    tex = cv2.GaussianBlur(tex, (7, 7), 1.5)
    return np.stack([tex[t : t + H, 2 * t : 2 * t + W] for t in range(num_frames)])


def encode(path: Path, frames: np.ndarray, *, codec="libx264", pix_fmt="yuv420p", fps=10,
           fmt="rgb24", pts: list[int] | None = None, options=None, container_format=None):
    """Encode frames with PyAV; ``pts`` in 1/1000 s makes a variable frame rate."""
    import av

    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        if options:
            stream.options = options
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format=fmt)
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def set_rotation(data: bytes, clockwise: int) -> bytes:
    """The mp4 with its track header's display matrix rotated (what phones write)."""
    data = bytearray(data)
    box = data.index(b"tkhd") - 4
    offset = box + (48 if data[box + 8] == 0 else 60)
    one = 1 << 16
    matrix = {90: (0, one, 0, -one, 0, 0), 180: (-one, 0, 0, 0, -one, 0),
              270: (0, -one, 0, one, 0, 0)}[clockwise]
    data[offset : offset + 36] = struct.pack(">9i", *matrix, 0, 0, 1 << 30)
    return bytes(data)


def flip_bits(data: bytes, lo: int, hi: int, count: int, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(count):
        i = rng.randrange(lo, max(lo + 1, hi))
        data[i] ^= 1 << rng.randrange(8)
    return bytes(data)


def make_videos(d: Path, rng: random.Random) -> dict[str, str]:
    """Write the videos; returns name -> what it is (the case name)."""
    import av
    import cv2

    base = encode(d / "base.mp4", texture(12, (96, 64)))
    data = base.read_bytes()
    videos = {"base.mp4": "a good H.264 clip, 12 frames 96x64"}

    def put(name, content, what):
        (d / name).write_bytes(content)
        videos[name] = what

    put("zero.mp4", b"", "zero bytes")
    put("text.mp4", b"just some text\n" * 10, "a text file named .mp4")
    put("random.mp4", bytes(rng.randrange(256) for _ in range(4096)), "random bytes")
    for k, cut in enumerate(sorted({8, 16, 32, 64, 100, 200, 400, 700}
                                   | {int(len(data) * f) for f in np.linspace(0.02, 0.98, 32)})):
        put(f"trunc_{k:02d}.mp4", data[:cut], f"truncated at byte {cut} of {len(data)}")
    moov = data.find(b"moov") - 4
    mdat = data.find(b"mdat") - 4
    for k in range(30):
        # Header: ftyp and the moov box (sample tables, track header).
        lo, hi = (moov, len(data)) if moov > mdat else (0, mdat)
        put(f"flip_head_{k:02d}.mp4", flip_bits(data, lo, hi, 1 + k % 4, rng),
            f"{1 + k % 4} bit flip(s) in the header")
    for k in range(30):
        put(f"flip_frames_{k:02d}.mp4", flip_bits(data, mdat + 8, moov if moov > mdat else
                                                  len(data), 1 + 4 * (k % 5), rng),
            f"{1 + 4 * (k % 5)} bit flip(s) in the frames")
    for ext in (".avi", ".txt", ".png", ".mkv"):
        put(f"base_as{ext}", data, f"an mp4 named {ext}")
    encode(d / "mkv_as.mp4", texture(6, (96, 64)), container_format="matroska")
    videos["mkv_as.mp4"] = "a Matroska file named .mp4"
    # Audio only.
    with av.open(str(d / "audio.mp4"), "w") as c:
        s = c.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(
                np.sin(np.arange(1024, dtype=np.float32) / 9 + i)[None] * 0.1,
                format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    videos["audio.mp4"] = "audio only"
    encode(d / "one_frame.mp4", texture(1, (96, 64)))
    videos["one_frame.mp4"] = "one frame"
    encode(d / "tiny_1x1.mkv", texture(4, (1, 1)), codec="ffv1", pix_fmt="yuv444p")
    videos["tiny_1x1.mkv"] = "1x1 pixel (FFV1)"
    encode(d / "tiny_2x2.mp4", texture(4, (2, 2)))
    videos["tiny_2x2.mp4"] = "2x2 pixels (H.264)"
    encode(d / "odd_33x17.mp4", texture(5, (33, 17)), pix_fmt="yuv444p")
    videos["odd_33x17.mp4"] = "odd size 33x17 (H.264 4:4:4)"
    encode(d / "odd_97x63.mkv", texture(5, (97, 63)), codec="ffv1", pix_fmt="yuv420p")
    videos["odd_97x63.mkv"] = "odd size 97x63 (FFV1 4:2:0)"
    encode(d / "tenbit.mp4", texture(5, (96, 64)), pix_fmt="yuv420p10le")
    videos["tenbit.mp4"] = "10-bit H.264"
    encode(d / "tenbit.mkv", texture(5, (96, 64)), codec="ffv1", pix_fmt="yuv444p10le")
    videos["tenbit.mkv"] = "10-bit FFV1"
    gray = texture(5, (96, 64))[..., 0]
    encode(d / "gray.mkv", gray, codec="ffv1", pix_fmt="gray", fmt="gray")
    videos["gray.mkv"] = "grayscale FFV1"
    writer = cv2.VideoWriter(str(d / "gray_cv.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10,
                             (96, 64), isColor=False)
    for image in gray:
        writer.write(image)
    writer.release()
    videos["gray_cv.avi"] = "grayscale MJPEG (OpenCV)"
    rgba = np.concatenate([texture(5, (96, 64)), np.full((5, 64, 96, 1), 128, np.uint8)], -1)
    encode(d / "alpha.mov", rgba, codec="png", pix_fmt="rgba", fmt="rgba")
    videos["alpha.mov"] = "alpha channel (PNG in MOV)"
    encode(d / "alpha.webm", rgba, codec="libvpx-vp9", pix_fmt="yuva420p", fmt="rgba")
    videos["alpha.webm"] = "alpha channel (VP9)"
    for deg in (90, 180, 270):
        put(f"rot{deg}.mp4", set_rotation(data, deg), f"rotated {deg}")
    encode(d / "vfr.mp4", texture(12, (96, 64)), fps=30,
           pts=[0, 33, 66, 300, 310, 320, 900, 901, 902, 903, 2000, 2033])
    videos["vfr.mp4"] = "variable frame rate"
    # Huge claimed dimensions: headers that promise far more than the file holds.
    put("huge.y4m", b"YUV4MPEG2 W100000 H100000 F30:1 C420jpeg\nFRAME\n" + bytes(1000),
        "Y4M claiming 100000x100000")
    put("huge_y4m_as.mp4", (d / "huge.y4m").read_bytes(), "Y4M claiming 100000x100000, .mp4")
    png = bytearray(cv2.imencode(".png", texture(1, (96, 64))[0])[1].tobytes())
    png[16:24] = struct.pack(">II", 60000, 60000)  # IHDR width, height (CRC now wrong)
    put("huge_png.mp4", bytes(png), "PNG header claiming 60000x60000, renamed .mp4")
    sps = data.find(b"avcC")
    put("huge_tkhd.mp4", _patch_tkhd_size(data, 30000, 30000), "track header claiming 30000x30000")
    if sps > 0:
        put("flip_sps.mp4", flip_bits(data, sps + 8, sps + 30, 6, rng), "bit flips in the SPS")
    for ext, params in ((".png", []), (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90])):
        ok, buf = cv2.imencode(ext, texture(1, (96, 64))[0], params)
        put(f"image{ext}.mp4", buf.tobytes(), f"a {ext[1:].upper()} image renamed .mp4")
    (d / "dir.mp4").mkdir()
    videos["dir.mp4"] = "a directory named .mp4"
    videos["missing.mp4"] = "no such file"
    return videos


def _patch_tkhd_size(data: bytes, w: int, h: int) -> bytes:
    data = bytearray(data)
    box = data.index(b"tkhd") - 4
    offset = box + (84 if data[box + 8] == 0 else 96)  # width, height: 16.16 fixed point
    data[offset : offset + 8] = struct.pack(">II", w << 16, h << 16)
    return bytes(data)


def make_prompts(d: Path) -> dict[str, str]:
    """Query files and masks for base.mp4 (96x64, 12 frames)."""
    import cv2

    files = {}

    def text(name, content, what):
        (d / name).write_text(content)
        files[name] = what

    def npy(name, array, what, allow_pickle=False):
        np.save(d / name, array, allow_pickle=allow_pickle)
        files[name] = what

    text("q_ok.csv", "frame,x,y\n0,40,30\n3,10,10\n", "good queries")
    text("q_nan.csv", "0,nan,30\n", "NaN")
    text("q_inf.csv", "0,inf,30\n", "inf")
    text("q_neginf.csv", "0,10,-inf\n", "-inf")
    text("q_huge.csv", "0,1e308,30\n", "huge coordinate")
    text("q_huge_frame.csv", "1e300,10,10\n", "huge frame")
    text("q_negative.csv", "0,-5,10\n", "negative x")
    text("q_neg_frame.csv", "-1,10,10\n", "negative frame")
    text("q_frac_frame.csv", "1.5,10,10\n", "fractional frame")
    text("q_empty.csv", "", "empty file")
    text("q_header_only.csv", "frame,x,y\n", "header only")
    text("q_two_cols.csv", "0,10\n", "two columns")
    text("q_four_cols.csv", "0,10,10,1\n", "four columns")
    text("q_ragged.csv", "0,10,10\n0,10\n", "ragged rows")
    text("q_words.csv", "zero,ten,ten\nfoo,bar,baz\n", "words")
    (d / "q_binary.csv").write_bytes(bytes(range(256)) * 4)
    files["q_binary.csv"] = "binary garbage"
    text("q_edge.csv", "0,0,0\n11,95,63\n", "corners and the last frame")
    text("q_outside.csv", "0,96,63\n", "just outside")
    text("q_many.csv", "".join(f"{i % 12},{i % 96},{i % 64}\n" for i in range(3000)),
         "3000 queries")
    text("q_semicolon.csv", "0;10;10\n", "semicolons")
    npy("q_ok.npy", np.array([[0, 40, 30], [2, 5, 5]], np.float32), "good .npy")
    npy("q_int8.npy", np.array([[0, 40, 30]], np.int8), ".npy int8")
    npy("q_bool.npy", np.ones((2, 3), bool), ".npy bool")
    npy("q_complex.npy", np.array([[0, 40 + 1j, 30]]), ".npy complex")
    npy("q_str.npy", np.array([["0", "1", "2"]]), ".npy strings")
    npy("q_1d.npy", np.array([0, 40, 30], np.float64), ".npy 1-D")
    npy("q_3d.npy", np.zeros((2, 2, 3)), ".npy 3-D")
    npy("q_empty.npy", np.zeros((0, 3)), ".npy (0, 3)")
    npy("q_scalar.npy", np.float64(3), ".npy scalar")
    npy("q_object.npy", np.array([[0, None, 1]], dtype=object), ".npy object (pickled)",
        allow_pickle=True)
    npy("q_nan.npy", np.array([[0, np.nan, 3]]), ".npy NaN")
    npy("q_f16.npy", np.array([[0, 40, 30]], np.float16), ".npy float16")
    (d / "q_trunc.npy").write_bytes((d / "q_ok.npy").read_bytes()[:70])
    files["q_trunc.npy"] = "truncated .npy"
    mask = np.zeros((64, 96), np.uint8)
    mask[10:50, 20:70] = 255

    def image(name, array, what):
        cv2.imwrite(str(d / name), array)
        files[name] = what

    image("m_ok.png", mask, "good mask")
    image("m_zero.png", np.zeros((64, 96), np.uint8), "all-zero mask")
    image("m_small.png", mask[::2, ::2], "mask of another size")
    image("m_1x1.png", np.full((1, 1), 255, np.uint8), "1x1 mask")
    image("m_transposed.png", mask.T.copy(), "transposed mask")
    image("m_16bit.png", mask.astype(np.uint16) * 257, "16-bit mask")
    image("m_color.png", np.dstack([mask, mask * 0, mask]), "colour mask")
    image("m_rgba.png", np.dstack([mask, mask, mask, mask]), "RGBA mask")
    image("m_tiny_dot.png", np.pad(np.full((1, 1), 255, np.uint8), ((30, 33), (40, 55))),
          "a one-pixel mask")
    (d / "m_corrupt.png").write_bytes((d / "m_ok.png").read_bytes()[:60])
    files["m_corrupt.png"] = "truncated PNG"
    (d / "m_text.png").write_text("not an image")
    files["m_text.png"] = "text named .png"
    return files


def make_checkpoints(d: Path, rng: random.Random) -> dict[str, str]:
    import torch

    from pointtrack.models.cotracker3 import CoTracker3Offline
    from pointtrack.models.weights import model_shapes, synthetic_state_dict

    state = synthetic_state_dict(model_shapes(CoTracker3Offline()))
    files = {}

    def save(name, obj, what):
        torch.save(obj, d / name)
        files[name] = what

    save("ck_ok.pth", state, "good synthetic weights")
    save("ck_wrapped.pth", {"model": state}, "weights wrapped in {'model': ...}")
    data = (d / "ck_ok.pth").read_bytes()
    for k, cut in enumerate(sorted({0, 10, 100, 1000}
                                   | {int(len(data) * f) for f in np.linspace(0.01, 0.99, 20)})):
        (d / f"ck_trunc_{k:02d}.pth").write_bytes(data[:cut])
        files[f"ck_trunc_{k:02d}.pth"] = f"truncated at byte {cut} of {len(data)}"
    for k in range(8):
        (d / f"ck_flip_{k}.pth").write_bytes(flip_bits(data, 0, len(data), 1 + 3 * k, rng))
        files[f"ck_flip_{k}.pth"] = f"{1 + 3 * k} bit flip(s)"
    keys = sorted(state)
    save("ck_missing.pth", {k: v for k, v in state.items() if k != keys[3]}, "a key missing")
    save("ck_extra.pth", {**state, "extra.weight": torch.zeros(3)}, "an extra key")
    save("ck_renamed.pth", {"module." + k: v for k, v in state.items()}, "keys prefixed")
    save("ck_shape.pth", {**state, keys[0]: torch.zeros(7, 7)}, "a wrong shape")
    save("ck_online.pth", {**state, "time_emb": torch.zeros(1, 16, 1110)}, "online time_emb")
    save("ck_int.pth", {k: v.to(torch.int32) for k, v in state.items()}, "int32 tensors")
    save("ck_f64.pth", {k: v.double() for k, v in state.items()}, "float64 tensors")
    save("ck_nan.pth", {k: torch.full_like(v, float("nan")) for k, v in state.items()},
         "NaN weights")
    save("ck_list.pth", [1, 2, 3], "a list")
    save("ck_tensor.pth", torch.zeros(3), "a bare tensor")
    save("ck_empty_dict.pth", {}, "an empty dict")
    save("ck_strings.pth", {"a": "b"}, "a dict of strings")
    (d / "ck_text.pth").write_text("not a checkpoint")
    files["ck_text.pth"] = "text"
    (d / "ck_zip.pth").write_bytes(_zip_bytes())
    files["ck_zip.pth"] = "a zip that is not a checkpoint"
    marker = d / "PAYLOAD_RAN"
    save("ck_evil.pth", {**state, "payload": _Payload(str(marker))},
         "a pickle whose __reduce__ creates a file")
    save("ck_evil_os.pth", _OsPayload(f"touch {marker}"), "a pickle calling os.system")
    return files


class _Payload:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


class _OsPayload:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _zip_bytes() -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", b"nonsense")
    return buf.getvalue()


# -- Cases ----------------------------------------------------------------------------------------


def make_cases(inputs: Path, seed: int = 0) -> list[Case]:
    """Write the inputs into ``inputs`` and return every case, in a fixed order."""
    rng = random.Random(seed)
    inputs.mkdir(parents=True, exist_ok=True)
    videos = make_videos(inputs, rng)
    prompts = make_prompts(inputs)
    checkpoints = make_checkpoints(inputs, rng)
    cases: list[Case] = []
    V = "{in}/"

    def track(kind, name, video, extra, uses=(), outputs=("t.npz",), **kw):
        argv = ["track", V + video, "--out", "t.npz", *extra]
        cases.append(Case(kind, name, argv, [video, *uses], list(outputs), **kw))

    # Videos: info, a plain track, and a track writing every output (which decodes twice).
    for video, what in videos.items():
        cases.append(Case("video", f"info: {what}", ["info", V + video], [video], []))
        track("video", f"track: {what}", video, ["--grid-size", "3"])
        if not video.startswith(("trunc_", "flip_")) or video.endswith(("0.mp4", "5.mp4")):
            track("video", f"track + csv + render: {what}", video,
                  ["--grid-size", "2", "--csv", "t.csv", "--render", "r.mp4"],
                  outputs=("t.npz", "t.csv", "r.mp4"))
        if video in ("base.mp4", "vfr.mp4", "rot90.mp4", "tenbit.mp4", "one_frame.mp4"):
            track("video", f"track --fps 3: {what}", video, ["--grid-size", "2", "--fps", "3"])
    for video in ("tiny_1x1.mkv", "tiny_2x2.mp4", "odd_33x17.mp4", "gray.mkv", "alpha.mov"):
        track("video", f"track with a query: {videos[video]}", video,
              ["--queries", V + "q_edge.csv"], uses=["q_edge.csv"])

    # Prompts: query files and masks on the good clip.
    for name, what in prompts.items():
        flag = "--mask" if name.startswith("m_") else "--queries"
        track("prompt", f"{flag} {what}", "base.mp4", [flag, V + name], uses=[name])
        if name.startswith("m_"):
            track("prompt", f"{flag} {what}, grid 5 from frame 4", "base.mp4",
                  [flag, V + name, "--grid-size", "5", "--grid-query-frame", "4"], uses=[name])
            track("prompt", f"queries and {what}", "base.mp4",
                  [flag, V + name, "--queries", V + "q_ok.csv"], uses=[name, "q_ok.csv"])
        else:
            track("prompt", f"{flag} {what}, every 3", "base.mp4",
                  [flag, V + name, "--every", "3"], uses=[name])
    track("prompt", "queries file missing", "base.mp4", ["--queries", V + "nope.csv"])
    track("prompt", "queries file is a directory", "base.mp4", ["--queries", V + "dir.mp4"],
          uses=[])
    track("prompt", "nothing to track", "base.mp4", [])

    # Options: grid sizes, sampling, time ranges, engines, outputs.
    grid = ["-1", "0", "1", "2", "50", "96", "97", "1000", "100000", "2147483648",
            "99999999999999999999", "1.5", "abc", "nan", ""]
    for g in grid:
        track("options", f"--grid-size {g!r}", "base.mp4", ["--grid-size", g])
    for g in ("-1", "11", "12", "1000000", "x"):
        track("options", f"--grid-query-frame {g}", "base.mp4",
              ["--grid-size", "2", "--grid-query-frame", g])
    for every in ("0", "-1", "1", "2", "11", "12", "1000000000", "99999999999999999999", "2.5",
                  "x"):
        track("options", f"--every {every}", "base.mp4", ["--grid-size", "2", "--every", every])
    for fps in ("0", "-5", "nan", "inf", "-inf", "1e-9", "0.5", "3", "10", "1e9", "1e308",
                "x"):
        track("options", f"--fps {fps}", "base.mp4", ["--grid-size", "2", "--fps", fps])
    track("options", "--every and --fps", "base.mp4",
          ["--grid-size", "2", "--every", "2", "--fps", "3"])
    for m in ("0", "-1", "1", "5", "1000000000", "99999999999999999999", "x"):
        track("options", f"--max-frames {m}", "base.mp4", ["--grid-size", "2", "--max-frames", m])
    for start, end in [("-1", None), ("0", None), ("0.5", None), ("1.1", None), ("1.2", None),
                       ("100", None), ("nan", None), ("inf", None), ("-inf", None),
                       (None, "0"), (None, "-1"), (None, "0.1"), (None, "0.55"), (None, "nan"),
                       (None, "inf"), (None, "1e308"), ("0.5", "0.5"), ("0.6", "0.2"),
                       ("0.2", "0.6"), ("1e308", "inf"), ("x", None)]:
        extra = ["--grid-size", "2"]
        extra += ["--start", start] if start is not None else []
        extra += ["--end", end] if end is not None else []
        track("options", f"--start {start} --end {end}", "base.mp4", extra)
    for start, end in [("0.3", None), (None, "0.4")]:
        track("options", f"--start {start} --end {end} on a variable frame rate", "vfr.mp4",
              ["--grid-size", "2"] + (["--start", start] if start else []) +
              (["--end", end] if end else []))
    track("options", "queries on a frame outside --start/--end", "base.mp4",
          ["--queries", V + "q_ok.csv", "--start", "0.5"], uses=["q_ok.csv"])
    track("options", "queries with --max-frames 2", "base.mp4",
          ["--queries", V + "q_ok.csv", "--max-frames", "2"], uses=["q_ok.csv"])
    for engine in ("nope", "", "LK", "cotracker3"):
        track("options", f"--engine {engine!r}", "base.mp4", ["--grid-size", "2", "--engine",
                                                             engine])
    for device in ("tpu", "cuda:99", ""):
        track("options", f"--device {device!r}", "base.mp4",
              ["--grid-size", "2", "--engine", "cotracker3-offline", "--checkpoint",
               V + "ck_ok.pth", "--device", device], uses=["ck_ok.pth"])
    track("options", "--precision int8", "base.mp4", ["--grid-size", "2", "--precision", "int8"])
    track("options", "--checkpoint with lk", "base.mp4",
          ["--grid-size", "2", "--checkpoint", V + "ck_ok.pth"], uses=["ck_ok.pth"])
    for out, what in [("sub/dir/t.npz", "--out in a new directory"),
                      ("t", "--out without .npz"), (".", "--out is a directory"),
                      ("{in}/base.mp4", "--out is the input video")]:
        argv = ["track", V + "base.mp4", "--grid-size", "2", "--out", out]
        expected = [out if out != "t" else "t"] if not out.startswith(("{in}", ".")) else []
        cases.append(Case("options", what, argv, ["base.mp4"], expected))
    cases.append(Case("options", "--csv is the --out file",
                      ["track", V + "base.mp4", "--grid-size", "2", "--out", "t.npz",
                       "--csv", "t.npz"], ["base.mp4"], []))
    cases.append(Case("options", "--render is the input video",
                      ["track", V + "base.mp4", "--grid-size", "2", "--out", "t.npz",
                       "--render", V + "base.mp4"], ["base.mp4"], []))
    cases.append(Case("options", "--render as .avi",
                      ["track", V + "base.mp4", "--grid-size", "2", "--out", "t.npz",
                       "--render", "r.avi"], ["base.mp4"], ["t.npz", "r.avi"]))
    cases.append(Case("options", "default --out in the working directory",
                      ["track", V + "base.mp4", "--grid-size", "2"], ["base.mp4"],
                      ["base.tracks.npz"]))
    cases.append(Case("options", "no arguments", ["track"], [], []))
    cases.append(Case("options", "unknown flag", ["track", V + "base.mp4", "--bogus"], [], []))
    cases.append(Case("options", "unknown command", ["bogus"], [], []))

    # Checkpoints, with the offline engine on two frames (CPU CoTracker3 is ~1 s a frame).
    marker = "{in}/PAYLOAD_RAN"
    for name, what in checkpoints.items():
        track("checkpoint", what, "base.mp4",
              ["--grid-size", "2", "--max-frames", "2", "--engine", "cotracker3-offline",
               "--checkpoint", V + name], uses=[name], marker=marker)
    for url, what in [("file://{in}/ck_ok.pth", "file:// URL"),
                      ("file://{in}/nope.pth", "file:// URL to nothing"),
                      ("file://{in}/ck_evil.pth", "file:// URL to the malicious pickle"),
                      ("file://otherhost/ck_ok.pth", "file:// URL on another host"),
                      ("http://127.0.0.1:9/ck.pth", "http:// URL"),
                      ("ftp://127.0.0.1:9/ck.pth", "ftp:// URL"),
                      ("https://127.0.0.1:9/ck.pth", "https:// URL nobody serves"),
                      ("javascript:alert(1)", "javascript: pseudo-URL"),
                      ("{in}/nope.pth", "missing file"), ("{in}/dir.mp4", "a directory"),
                      ("scaled_nonexistent", "unknown registry name")]:
        track("checkpoint", what, "base.mp4",
              ["--grid-size", "2", "--max-frames", "2", "--engine", "cotracker3-offline",
               "--checkpoint", url], uses=["ck_ok.pth", "ck_evil.pth"], marker=marker)
    track("checkpoint", "online engine, offline weights", "base.mp4",
          ["--grid-size", "2", "--max-frames", "2", "--engine", "cotracker3-online",
           "--checkpoint", V + "ck_ok.pth"], uses=["ck_ok.pth"], marker=marker)
    return cases


# -- Running ---------------------------------------------------------------------------------------


def digest(path: Path) -> str:
    if path.is_dir():
        return "dir:" + ",".join(sorted(p.name for p in path.iterdir()))
    if not path.exists():
        return "missing"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


def judge(case: Case, inputs: Path, work: Path, rc: int | None, stderr: str,
          before: dict[str, str], before_listing: set[str], seconds: float) -> Result:
    """Classify one finished run (rc None: it timed out)."""

    def result(outcome, why):
        return Result(case.kind, case.name, case.argv, outcome, why, round(seconds, 3))

    if rc is None:
        return result("BAD", f"no answer after {case.timeout:.0f} s")
    if case.marker and Path(case.marker.replace("{in}", str(inputs))).exists():
        return result("BAD", "the pickle's payload ran")
    changed = [name for name, h in before.items() if digest(inputs / name) != h]
    if changed:
        return result("BAD", f"input changed: {changed}")
    if listing(inputs) != before_listing:
        return result("BAD", f"files appeared beside the inputs: "
                             f"{sorted(listing(inputs) ^ before_listing)}")
    if "Traceback" in stderr:
        return result("BAD", "traceback: " + stderr.strip().splitlines()[-1][:300])
    left = sorted(listing(work))
    temps = [p for p in left if ".part-" in p]
    if temps:
        return result("BAD", f"temp files left: {temps}")
    lines = stderr.strip().splitlines()
    if rc == 2:
        if len(lines) != 1 or not lines[0].startswith("pointtrack: error: "):
            return result("BAD", f"exit 2 but stderr is {len(lines)} line(s): {stderr[:300]!r}")
        if left:
            return result("BAD", f"error but files written: {left}")
        return result("clean error", lines[0][len("pointtrack: error: "):])
    if rc != 0:
        return result("BAD", f"exit code {rc}: {stderr.strip()[-300:]!r}")
    missing = [o for o in case.outputs if not (work / o).is_file()]
    if missing:
        return result("BAD", f"exit 0 but outputs missing: {missing} (have {left})")
    for o in case.outputs:
        if o.endswith(".npz"):
            from pointtrack.tracks import Tracks, TracksError

            try:
                Tracks.load(work / o)
            except TracksError as e:
                return result("BAD", f"unreadable output {o}: {e}")
    return result("ok", "")


class InProcessWorker:
    """A long-lived interpreter running ``pointtrack.cli.main`` case after case."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), FIFTYONE_DO_NOT_TRACK="true")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        self.answers: list[str] = []

    def run(self, argv: list[str], cwd: Path, timeout: float) -> tuple[int | None, str]:
        self.proc.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd)}) + "\n")
        self.proc.stdin.flush()
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()))
        reader.start()
        reader.join(timeout)
        if not line or not line[0]:
            self.proc.kill()  # a hang, or the worker died (a crash in native code)
            self.proc.wait()
            died = self.proc.returncode
            self.start()
            return (None if not line else -abs(died or 9)), ""
        answer = json.loads(line[0])
        return answer["rc"], answer["stderr"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


class SubprocessWorker:
    """A fresh ``python -m pointtrack`` per case."""

    def run(self, argv: list[str], cwd: Path, timeout: float) -> tuple[int | None, str]:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), FIFTYONE_DO_NOT_TRACK="true")
        try:
            r = subprocess.run([sys.executable, "-m", "pointtrack", *argv], cwd=cwd, env=env,
                               capture_output=True, text=True, timeout=timeout,
                               preexec_fn=_limit_memory)
        except subprocess.TimeoutExpired:
            return None, ""
        return r.returncode, r.stderr

    def close(self) -> None:
        pass


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def worker_loop() -> None:
    """``--worker``: read cases as JSON lines, answer ``{"rc", "stderr"}`` per line."""
    _limit_memory()
    answers = os.fdopen(os.dup(1), "w")
    from pointtrack.cli import main

    for line in sys.stdin:
        job = json.loads(line)
        os.chdir(job["cwd"])
        with tempfile.TemporaryFile("w+") as err, tempfile.TemporaryFile("w+") as out:
            # Redirect the descriptors, not just sys.stderr: FFmpeg and OpenCV write there too.
            sys.stdout.flush(), sys.stderr.flush()
            saved = os.dup(1), os.dup(2)
            os.dup2(out.fileno(), 1), os.dup2(err.fileno(), 2)
            try:
                rc = main(job["argv"])
            except SystemExit as e:  # argparse
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # what a real process would die of, traceback and all
                traceback.print_exc()
                rc = 1
            finally:
                sys.stdout.flush(), sys.stderr.flush()
                os.dup2(saved[0], 1), os.dup2(saved[1], 2)
                os.close(saved[0]), os.close(saved[1])
            err.seek(0)
            stderr = err.read()
        answers.write(json.dumps({"rc": rc, "stderr": stderr}) + "\n")
        answers.flush()


def run_cases(cases: list[Case], inputs: Path, work_root: Path, *, jobs: int = 2,
              subprocesses: bool = False, progress: bool = True) -> list[Result]:
    """Run ``cases`` in ``jobs`` workers; each case gets a fresh working directory."""
    import queue

    todo: queue.Queue = queue.Queue()
    for i, case in enumerate(cases):
        todo.put((i, case))
    results: list[Result | None] = [None] * len(cases)
    lock = threading.Lock()
    done = [0]

    def work() -> None:
        worker = SubprocessWorker() if subprocesses else InProcessWorker()
        try:
            while True:
                try:
                    i, case = todo.get_nowait()
                except queue.Empty:
                    return
                cwd = work_root / f"case{i:04d}"
                cwd.mkdir(parents=True)
                argv = [a.replace("{in}", str(inputs)) for a in case.argv]
                with lock:  # inputs are shared: hash them while no case of ours writes
                    before = {name: digest(inputs / name) for name in case.inputs}
                    before_listing = listing(inputs)
                started = time.perf_counter()
                rc, stderr = worker.run(argv, cwd, case.timeout)
                seconds = time.perf_counter() - started
                with lock:
                    results[i] = judge(case, inputs, cwd, rc, stderr, before, before_listing,
                                       seconds)
                    marker = Path(case.marker.replace("{in}", str(inputs))) if case.marker \
                        else None
                    if marker is not None and marker.exists():
                        marker.unlink()  # so that later cases are judged on their own
                    done[0] += 1
                    if progress and (done[0] % 50 == 0 or results[i].outcome == "BAD"):
                        r = results[i]
                        print(f"  [{done[0]}/{len(cases)}] {r.outcome}: {r.kind}: {r.name}"
                              + (f" -- {r.why}" if r.outcome == "BAD" else ""), flush=True)
                shutil.rmtree(cwd, ignore_errors=True)
        finally:
            worker.close()

    threads = [threading.Thread(target=work) for _ in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for r in results if r is not None]


def summarize(results: list[Result]) -> str:
    """A markdown table: cases per kind and their outcomes."""
    rows = ["| kind | cases | ok | clean error | BAD |", "| --- | --- | --- | --- | --- |"]
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        by_kind[r.kind][r.outcome] += 1
    total: Counter = Counter()
    for kind in KINDS:
        c = by_kind.get(kind, Counter())
        total.update(c)
        rows.append(f"| {kind} | {sum(c.values())} | {c['ok']} | {c['clean error']} | "
                    f"{c['BAD']} |")
    rows.append(f"| **all** | **{sum(total.values())}** | {total['ok']} | "
                f"{total['clean error']} | **{total['BAD']}** |")
    return "\n".join(rows)


def error_classes(results: list[Result]) -> Counter:
    """Clean errors grouped by their message with paths and numbers taken out."""
    classes: Counter = Counter()
    for r in results:
        if r.outcome == "clean error":
            text = re.sub(r"(/[^\s:,()']+)+", "PATH", r.why)
            text = re.sub(r"-?\d[\d.e+-]*", "N", text)
            classes[text[:90]] += 1
    return classes


def subset(cases: list[Case], per_kind: int, seed: int = 0) -> list[Case]:
    """A fixed sample of ``per_kind`` cases of each kind (the CI subset)."""
    rng = random.Random(seed)
    picked = []
    for kind in KINDS:
        of_kind = [c for c in cases if c.kind == kind]
        picked += rng.sample(of_kind, min(per_kind, len(of_kind)))
    return picked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--subprocess", action="store_true",
                        help="a fresh `python -m pointtrack` per case (slower)")
    parser.add_argument("--per-kind", type=int, help="run only this many cases of each kind")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/fuzz.json"))
    args = parser.parse_args()
    if args.worker:
        worker_loop()
        return 0
    with tempfile.TemporaryDirectory(prefix="pointtrack-fuzz-") as tmp:
        inputs = Path(tmp) / "inputs"
        started = time.perf_counter()
        cases = make_cases(inputs, seed=args.seed)
        if args.per_kind:
            cases = subset(cases, args.per_kind, args.seed)
        print(f"{len(cases)} cases, inputs made in {time.perf_counter() - started:.1f} s; "
              f"running in {args.jobs} {'subprocess' if args.subprocess else 'in-process'} "
              f"workers", flush=True)
        results = run_cases(cases, inputs, Path(tmp) / "work", jobs=args.jobs,
                            subprocesses=args.subprocess)
        seconds = time.perf_counter() - started
    table = summarize(results)
    print(table)
    print("\nmost common clean errors:")
    for text, n in error_classes(results).most_common(15):
        print(f"  {n:4d}  {text}")
    bad = [r for r in results if r.outcome == "BAD"]
    for r in bad:
        print(f"BAD {r.kind}: {r.name}: {r.why}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {os.cpu_count()} CPUs, python {platform.python_version()}",
        "seed": args.seed, "mode": "subprocess" if args.subprocess else "in-process",
        "jobs": args.jobs, "seconds": round(seconds, 1), "table": table,
        "error_classes": dict(error_classes(results).most_common()),
        "results": [asdict(r) for r in results],
    }, indent=1))
    print(f"wrote {args.out} ({seconds:.0f} s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
