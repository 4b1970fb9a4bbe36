"""pointtrack's FiftyOne plugin: the operators "Track points" and "Evaluate tracks".

A thin layer over the package: forms and App refreshes here, the work in
`pointtrack.fiftyone` (the same runner as ``pointtrack dataset track``).
"""

from __future__ import annotations

import fiftyone.operators as foo
import fiftyone.operators.types as types

from pointtrack import fiftyone as ptf
from pointtrack.fiftyone import plugin

QUERY_MODES = ("first", "strided")
METRICS = {"aj": "average_jaccard", "delta_avg": "average_pts_within_thresh",
           "oa": "occlusion_accuracy"}


def _needs_videos(ctx, inputs) -> bool:
    """False (with a warning on the form) unless the App shows a video dataset."""
    if ctx.dataset is not None and ctx.dataset.media_type == "video":
        return True
    _refuse(inputs, "no_videos", "pointtrack works on video datasets")
    return False


def _refuse(inputs, name: str, label: str) -> None:
    """A warning on the form that keeps it from being executed."""
    warning = inputs.str(name, label=label, view=types.Warning())
    warning.invalid = True


def _choice(inputs, name: str, choices, label: str, **options):
    """Input ``name``: one of ``choices`` (engines, field names), in a dropdown that shows
    each as it is; ``options`` as for ``inputs.enum`` (default, required, description)."""
    view = types.DropdownView()
    for choice in choices:
        view.add_choice(choice, label=choice)
    return inputs.enum(name, list(choices), label=label, view=view, **options)


class TrackPoints(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="track_points",
            label="Track points",
            description="Track a grid or prompted points through each video into a frame field",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            risk_level=types.RiskLevel.MEDIUM,
        )

    def resolve_delegation(self, ctx):
        # Ticking "delegate" forces a delegated run; otherwise the App offers both.
        return True if ctx.params.get("delegate") else None

    def resolve_input(self, ctx):
        inputs = types.Object()
        if _needs_videos(ctx, inputs):
            inputs.view_target(ctx, action_description="Track points in")
            engine = ctx.params.get("engine") or "lk"
            _choice(inputs, "engine", plugin.ENGINES, "Engine", default="lk")
            if engine != "lk":
                inputs.str("checkpoint", label="Checkpoint",
                           description="A path, URL or registry name (default: the official "
                                       "weights for this engine)")
                inputs.enum("device", plugin.DEVICES, default="auto", label="Device",
                            description="auto: a GPU where the run happens to have one",
                            view=types.RadioGroup())
                inputs.enum("precision", plugin.PRECISIONS, default="fp32", label="Precision",
                            description="bf16: the fast GPU path", view=types.RadioGroup())
            inputs.int("grid_size", default=10, min=1, label="Grid size",
                       description="N x N points over each frame, or per box/mask when "
                                   "prompted")
            prompts = plugin.prompt_fields(ctx.dataset)
            if prompts:
                _choice(inputs, "prompt_field", prompts, "Prompt field",
                        description="Start from these labels on the first tracked frame "
                                    "(default: a grid over the frame)")
            inputs.enum("sampling", ["every", "fps"], default="every", label="Sampling",
                        view=types.RadioGroup())
            if (ctx.params.get("sampling") or "every") == "every":
                inputs.int("every", default=1, min=1, label="Keep every k-th frame")
            else:
                inputs.float("fps", default=10.0, min=0.001, label="Frames per second")
            inputs.int("max_frames", min=1, label="Max frames",
                       description="Keep at most this many frames per video")
            inputs.str("label_field", default="tracks", label="Output field",
                       description="Frame field of Keypoints to write")
            inputs.bool("overwrite", default=False, label="Overwrite",
                        description="Redo videos already tracked in this field")
            inputs.bool("delegate", default=False, label="Delegate",
                        description="Queue the run for `fiftyone delegated launch`")
        return types.Property(inputs, view=types.View(label="Track points"))

    def execute(self, ctx):
        p = ctx.params
        engine = p.get("engine") or "lk"
        cotracker = {} if engine == "lk" else {"device": p.get("device") or "auto",
                                               "precision": p.get("precision")}
        tracker = plugin.build_tracker(engine, p.get("checkpoint"), **cotracker)
        by_fps = p.get("sampling") == "fps"
        field = p.get("label_field") or "tracks"
        summary = plugin.track_with_progress(
            ctx.target_view(),
            tracker,
            field,
            on_progress=lambda done, total: ctx.set_progress(
                done / total, label=f"{done}/{total} videos"),
            grid_size=p.get("grid_size") or 10,
            prompt_field=p.get("prompt_field") or None,
            every=1 if by_fps else p.get("every") or 1,
            fps=p.get("fps") if by_fps else None,
            max_frames=p.get("max_frames") or None,
            overwrite=bool(p.get("overwrite")),
        )
        # Saved on the dataset (for later sessions) and set in this App session.
        scheme = ptf.color_scheme(field, ctx.dataset)
        ctx.trigger("reload_dataset")
        ctx.trigger("set_color_scheme", {"color_by": scheme.color_by, "fields": scheme.fields,
                                         "show_keypoint_skeletons": scheme.show_skeletons})
        return {"tracked": len(summary.done), "skipped": len(summary.skipped),
                "failed": len(summary.failed), "summary": str(summary)}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("tracked", label="Videos tracked")
        outputs.int("skipped", label="Skipped (already tracked)")
        outputs.int("failed", label="Failed (error on the sample)")
        outputs.str("summary", label="Summary")
        return types.Property(outputs, view=types.View(label="Track points"))


class EvaluateTracks(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="evaluate_tracks",
            label="Evaluate tracks",
            description="TAP-Vid metrics (AJ, delta avg, OA) of predicted tracks against "
                        "ground truth",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            risk_level=types.RiskLevel.MEDIUM,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        if _needs_videos(ctx, inputs):
            fields = plugin.tracks_fields(ctx.dataset)
            if not fields:
                _refuse(inputs, "no_tracks", "No tracks fields: run Track points first")
                return types.Property(inputs, view=types.View(label="Evaluate tracks"))
            inputs.view_target(ctx, action_description="Evaluate")
            _choice(inputs, "pred_field", fields, "Predictions", required=True)
            _choice(inputs, "gt_field", fields, "Ground truth", required=True)
            inputs.str("eval_key", default="eval", label="Evaluation key",
                       description="Per-sample results go to <key>_aj, <key>_delta_avg, "
                                   "<key>_oa")
            inputs.enum("query_mode", QUERY_MODES, default="first", label="Query mode",
                        view=types.RadioGroup())
        return types.Property(inputs, view=types.View(label="Evaluate tracks"))

    def execute(self, ctx):
        p = ctx.params
        samples = ctx.target_view()
        pred, gt = p["pred_field"], p["gt_field"]
        eval_key, mode = p.get("eval_key") or "eval", p.get("query_mode") or "first"
        ptf.evaluate_tracks(samples, pred, gt, eval_key=eval_key, query_mode=mode)
        aj = f"{eval_key}_aj"
        scored = samples.exists(aj) if samples.has_field(aj) else samples.limit(0)
        if not len(scored):
            raise ValueError(f"no sample has comparable '{pred}' and '{gt}' tracks")
        ctx.trigger("reload_dataset")
        return {"num_samples": len(scored),
                **{k: scored.mean(f"{eval_key}_{k}") for k in METRICS}}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("num_samples", label="Videos scored")
        outputs.float("aj", label="Average Jaccard")
        outputs.float("delta_avg", label="Delta avg (< 1, 2, 4, 8, 16 px)")
        outputs.float("oa", label="Occlusion accuracy")
        return types.Property(outputs, view=types.View(label="Evaluate tracks"))


def register(p):
    p.register(TrackPoints)
    p.register(EvaluateTracks)
