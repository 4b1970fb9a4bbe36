"""Shared fixtures: small real videos the tests encode themselves."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from pointtrack.video import write_video


def textured_frames(num_frames: int = 12, size=(160, 120), step=(2, 1), seed: int = 0):
    """Frames ``(T, H, W, 3)`` of a smooth random texture translating by ``step`` px/frame.

    Content moves by ``-step`` per frame, so a point at (x, y) on frame 0 is at
    (x - t*sx, y - t*sy) on frame t.
    """
    W, H = size
    sx, sy = step
    rng = np.random.default_rng(seed)
    tex = (rng.random((H + abs(sy) * num_frames + 8, W + abs(sx) * num_frames + 8, 3)) * 255)
    tex = cv2.GaussianBlur(tex.astype(np.uint8), (7, 7), 1.5)
    return np.stack(
        [tex[t * sy : t * sy + H, t * sx : t * sx + W] for t in range(num_frames)]
    )


@pytest.fixture
def make_video(tmp_path):
    """Encode frames to an mp4 in tmp_path; returns (path, frames)."""

    def make(name="clip.mp4", fps=10.0, **kwargs):
        frames = textured_frames(**kwargs)
        path = write_video(tmp_path / name, frames, fps=fps)
        return path, frames

    return make


def set_mp4_rotation(path: Path, clockwise: int) -> None:
    """Rewrite the track header's display matrix (what phones write) to rotate the video."""
    data = bytearray(Path(path).read_bytes())
    box = data.index(b"tkhd") - 4
    offset = box + (48 if data[box + 8] == 0 else 60)
    one = 1 << 16
    matrix = {
        90: (0, one, 0, -one, 0, 0),
        180: (-one, 0, 0, 0, -one, 0),
        270: (0, -one, 0, one, 0, 0),
    }[clockwise]
    data[offset : offset + 36] = struct.pack(">9i", *matrix, 0, 0, 1 << 30)
    Path(path).write_bytes(bytes(data))


def encode_with_pyav(path, frames, fps=10, codec="libx264", pix_fmt="yuv420p", fmt="rgb24"):
    """Encode frames directly with PyAV (for sources our writer does not make)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format=fmt)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = Path(os.environ.get("POINTTRACK_TEST_ARTIFACTS", "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
