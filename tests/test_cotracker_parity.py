"""Our CoTracker3 against outputs of the official implementation (tests/data/parity, made with
synthetic weights; see its README for the recipe, the cases and the tolerances)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pointtrack.models.cotracker3 import CoTracker3Offline, CoTracker3Online
from pointtrack.models.weights import load_weights, model_shapes, synthetic_state_dict
from pointtrack.trackers import load_tracker

DATA = Path(__file__).parent / "data" / "parity"
TRACKS_TOL = 1e-2  # px
PROB_TOL = 1e-3
FLAGS_TOL = 0.01  # fraction of visibility flags that may differ


def case(name: str) -> dict:
    with np.load(DATA / f"{name}.npz") as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def weights() -> dict:
    return {
        kind: synthetic_state_dict(json.loads((DATA / f"{kind}_shapes.json").read_text()), seed=0)
        for kind in ("offline", "online")
    }


@pytest.fixture(scope="module")
def offline(weights):
    return load_tracker("cotracker3-offline", checkpoint=weights["offline"], device="cpu")


@pytest.fixture(scope="module")
def online(weights):
    return load_tracker("cotracker3-online", checkpoint=weights["online"], device="cpu")


def check_tracks(tracks, expected: dict) -> None:
    assert tracks.xy.shape == expected["tracks"].shape
    err = np.abs(tracks.xy - expected["tracks"]).max()
    flips = (tracks.visible != expected["visibility"]).mean()
    print(f"max |tracks| error {err:.2e} px, visibility flags differing {flips:.2%}")
    assert err <= TRACKS_TOL
    assert flips <= FLAGS_TOL
    assert tracks.visibility is not None and tracks.confidence is not None


def test_checkpoint_keys_and_shapes_match_official():
    for kind, model in (("offline", CoTracker3Offline()), ("online", CoTracker3Online())):
        official = json.loads((DATA / f"{kind}_shapes.json").read_text())
        assert model_shapes(model) == official


def test_synthetic_weights_follow_recipe():
    shapes = {"a.time_emb": [1, 3, 4], "b.weight": [5, 4, 3, 3], "c.bias": [7],
              "x.norm_context.weight": [6], "u.virual_tracks": [1, 2, 1, 3]}
    w = synthetic_state_dict(shapes, seed=0)
    assert all(w[k].dtype == torch.float32 and list(w[k].shape) == s for k, s in shapes.items())
    w_other = synthetic_state_dict(shapes, seed=1)
    assert not torch.equal(w["b.weight"], w_other["b.weight"])
    assert torch.equal(w["b.weight"], synthetic_state_dict({"b.weight": [5, 4, 3, 3]})["b.weight"])
    assert abs(w["x.norm_context.weight"].mean().item() - 1) < 0.1
    assert w["b.weight"].std().item() < 0.5  # scaled by 1/sqrt(4 * 3 * 3)


def test_offline_model(weights):
    d = case("offline_model")
    model = load_weights(CoTracker3Offline(), weights["offline"], "scaled_offline").eval()
    video = torch.from_numpy(d["video"]).permute(0, 3, 1, 2).float()
    video = F.interpolate(video, (384, 512), mode="bilinear", align_corners=True)[None]
    with torch.inference_mode():
        coords, vis, conf = model(video, torch.from_numpy(d["queries_model"])[None], iters=6)
    errors = [np.abs(coords[0].numpy() - d["coords"]).max(),
              np.abs(vis[0].numpy() - d["vis_prob"]).max(),
              np.abs(conf[0].numpy() - d["conf_prob"]).max()]
    print("max errors coords {:.2e} px, vis {:.2e}, conf {:.2e}".format(*errors))
    assert errors[0] <= TRACKS_TOL
    assert errors[1] <= PROB_TOL and errors[2] <= PROB_TOL


def test_offline_grid(offline):
    d = case("offline_grid")
    check_tracks(offline.track(d["video"], grid_size=int(d["arg_grid_size"])), d)


def test_offline_queries_forward(offline):
    d = case("offline_queries_forward")
    check_tracks(offline.track(d["video"], queries=d["arg_queries"]), d)


def test_offline_queries_backward(offline):
    d = case("offline_queries_backward")
    tracks = offline.track(d["video"], queries=d["arg_queries"],
                           backward_tracking=bool(d["arg_backward_tracking"]))
    check_tracks(tracks, d)


def test_offline_mask_grid(offline):
    d = case("offline_mask_grid")
    tracks = offline.track(d["video"], grid_size=int(d["arg_grid_size"]),
                           segm_mask=d["arg_segm_mask"],
                           grid_query_frame=int(d["arg_grid_query_frame"]))
    check_tracks(tracks, d)


def test_online_grid(online):
    d = case("online_grid")
    check_tracks(online.track(d["video"], grid_size=int(d["arg_grid_size"])), d)


def test_online_queries_support(online):
    d = case("online_queries_support")
    assert bool(d["arg_add_support_grid"])
    check_tracks(online.track(d["video"], queries=d["arg_queries"]), d)
