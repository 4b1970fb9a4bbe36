"""``pointtrack dataset create|track|list`` and ``pointtrack app``: FiftyOne video datasets."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from ..runners import RunAborted
from . import CLIError
from .track import add_engine_arguments, load_engine


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="FiftyOne video datasets: create, track, list")
    dsub = p.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)

    c = dsub.add_parser("create", help="a dataset from a directory or glob of videos")
    c.add_argument("source", metavar="DIR", help="directory (searched recursively) or glob")
    c.add_argument("--name", required=True, help="dataset name")
    c.add_argument("--overwrite", action="store_true", help="replace a dataset of that name")
    c.set_defaults(func=run_create)

    t = dsub.add_parser("track", help="track every video of a dataset into a frame field")
    t.add_argument("name", metavar="NAME", help="dataset name")
    add_engine_arguments(t)
    t.add_argument("--grid-size", type=int, default=10,
                   help="N x N grid over each frame, or per box/mask with --prompt-field "
                        "(default 10)")
    t.add_argument("--field", default="tracks", help="frame field to write (default: tracks)")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--every", type=int, default=1, metavar="K", help="keep every K-th frame")
    g.add_argument("--fps", type=float, metavar="F", help="keep frames at about this rate")
    t.add_argument("--max-frames", type=int, metavar="M", help="keep at most M frames")
    t.add_argument("--prompt-field", metavar="F",
                   help="frame field of Detections, Segmentation or Keypoints to start from")
    t.add_argument("--prompt-frame", type=int, metavar="K",
                   help="1-based frame number of the prompt labels / grid (default: first "
                        "tracked frame)")
    t.add_argument("--include-occluded", action="store_true",
                   help="also store occluded points (attribute occluded=True)")
    t.add_argument("--backward", action="store_true", help="also track backward in time")
    t.add_argument("--overwrite", action="store_true", help="redo samples already tracked")
    b = t.add_mutually_exclusive_group()
    b.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster: ADDRESS of its head (e.g. ray://host:10001 or "
                        "auto), or none to start a local one; needs pointtrack[ray]")
    b.add_argument("--sequential", action="store_true",
                   help="decode, track and store one after another (no pipelining)")
    t.add_argument("--loaders", type=int, default=2, metavar="N",
                   help="decoders ahead of the tracker (default 2)")
    t.add_argument("--loader-processes", action=argparse.BooleanOptionalAction, default=None,
                   help="decode in processes rather than threads of the tracking process "
                        "(default: processes on GPU, where decoding threads would hold the "
                        "GIL the tracking thread needs)")
    t.add_argument("--store-processes", type=int, default=None, metavar="N",
                   help="processes writing labels (default: none on CPU, a quarter of the "
                        "cores, at most 4, on GPU, shared by the tracking processes)")
    t.add_argument("--processes", type=int, default=1, metavar="N",
                   help="tracking processes, each with a copy of the model on the device "
                        "(default 1; 2 keeps a GPU busier: one's CPU work overlaps the "
                        "other's GPU work)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=run_track)

    ls = dsub.add_parser("list", help="list datasets")
    ls.set_defaults(func=run_list)

    a = sub.add_parser("app", help="open a dataset in the FiftyOne App (blocks until Ctrl-C)")
    a.add_argument("name", metavar="NAME", help="dataset name")
    a.add_argument("--port", type=int, default=5151, help="App port (default 5151)")
    a.add_argument("--address", default="127.0.0.1",
                   help="address to serve on (default 127.0.0.1: this machine only; 0.0.0.0 "
                        "serves every network the machine is on)")
    a.add_argument("--remote", action="store_true",
                   help="serve for a browser elsewhere (e.g. over ssh -L); no window opens")
    a.add_argument("--field", default="tracks",
                   help="frame field of tracks to colour by track (default: tracks)")
    a.set_defaults(func=run_app)


def _dataset(name: str):
    from .. import fiftyone as ptf

    try:
        return ptf.load_dataset(name)
    except ptf.DatasetError as e:
        raise CLIError(str(e)) from e


def run_create(args: argparse.Namespace) -> int:
    from .. import fiftyone as ptf

    try:
        dataset = ptf.create_dataset(args.source, args.name, overwrite=args.overwrite)
    except ptf.DatasetError as e:
        raise CLIError(str(e)) from e
    missing = len(dataset.exists("metadata", False))
    note = f" ({missing} unreadable: no metadata)" if missing else ""
    print(f"dataset '{dataset.name}': {len(dataset)} videos{note}")
    return 0


def run_track(args: argparse.Namespace) -> int:
    from .. import fiftyone as ptf

    dataset = _dataset(args.name)
    if args.prompt_field is not None:
        try:
            ptf.check_prompt_field(dataset, args.prompt_field)
        except ptf.DatasetError as e:
            raise CLIError(str(e)) from e
    if args.grid_size < 1:
        raise CLIError(f"grid size must be >= 1, got {args.grid_size}")
    if args.every < 1:
        raise CLIError(f"--every must be >= 1, got {args.every}")
    if args.fps is not None and not args.fps > 0:
        raise CLIError(f"--fps must be > 0, got {args.fps}")
    if args.max_frames is not None and args.max_frames < 1:
        raise CLIError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.loaders < 1:
        raise CLIError(f"--loaders must be >= 1, got {args.loaders}")
    if args.store_processes is not None and args.store_processes < 0:
        raise CLIError(f"--store-processes must be >= 0, got {args.store_processes}")
    if args.processes < 1:
        raise CLIError(f"--processes must be >= 1, got {args.processes}")
    if args.processes > 1 and (args.ray is not None or args.sequential):
        raise CLIError("--processes is for the local runner: Ray runs one actor per GPU, "
                       "--sequential one process")
    if args.ray is not None:
        from ..runners.ray import RayUnavailable, import_ray

        try:
            import_ray()
        except RayUnavailable as e:
            raise CLIError(str(e)) from e
        backend, options = "ray", {}
    else:
        backend = "sequential" if args.sequential else "local"
        options = {} if args.sequential else {"loaders": args.loaders,
                                              "store_processes": args.store_processes,
                                              "loader_processes": args.loader_processes,
                                              "processes": args.processes}
    tracker = load_engine(args)
    try:
        summary = ptf.track_dataset(
            dataset,
            tracker,
            args.field,
            grid_size=args.grid_size,
            prompt_field=args.prompt_field,
            prompt_frame=args.prompt_frame,
            every=args.every,
            fps=args.fps,
            max_frames=args.max_frames,
            backward_tracking=args.backward,
            include_occluded=args.include_occluded,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            backend=backend,
            ray_address=args.ray or None,
            runner_options=options,
        )
    except (ptf.DatasetError, RunAborted) as e:
        raise CLIError(str(e)) from e
    print(summary)
    # Some samples failed (their errors are on the samples): not a user error, but not success.
    return 1 if summary.failed else 0


def run_list(args: argparse.Namespace) -> int:
    import fiftyone as fo

    for name in fo.list_datasets():
        dataset = fo.load_dataset(name)
        print(f"{name}\t{dataset.media_type}\t{len(dataset)} samples")
    return 0


def run_app(args: argparse.Namespace) -> int:
    import fiftyone as fo

    from .. import fiftyone as ptf

    dataset = _dataset(args.name)
    frame_schema = dataset.get_frame_field_schema() or {}
    if args.field not in frame_schema:
        raise CLIError(
            f"dataset '{dataset.name}' has no frame field '{args.field}' "
            f"(frame fields: {', '.join(sorted(frame_schema)) or 'none'})"
        )
    scheme = ptf.color_scheme(args.field, dataset)
    # The address is always explicit: left to FiftyOne, a config file or
    # FIFTYONE_DEFAULT_APP_ADDRESS could open the datasets to the whole network.
    session = fo.launch_app(
        dataset,
        port=args.port,
        address=args.address,
        remote=True,  # we print the URL ourselves; no browser is opened from here
        color_scheme=scheme,
        auto=False,
    )
    print(f"FiftyOne App: {session.url}", flush=True)
    if args.remote:
        print(f"remote: on your machine run `ssh -N -L {args.port}:localhost:{args.port} HOST`, "
              f"then open http://localhost:{args.port}", flush=True)
    print("Ctrl-C to stop", file=sys.stderr, flush=True)
    if threading.current_thread() is threading.main_thread():
        # A process started with SIGINT ignored (its parent ignored it) would never see Ctrl-C
        # and wait for ever: take it back, since Ctrl-C is how this command ends.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        session.wait(-1)
    except KeyboardInterrupt:
        pass
    finally:
        _stop_app_server(session)
    return 0


def _stop_app_server(session, timeout: float = 15.0) -> None:
    """Stop the App's server process within ``timeout`` seconds.

    FiftyOne stops it at exit by closing the server's stdin and waiting with no limit; once, in
    CI, that wait outlasted a minute after Ctrl-C. Here the server gets ``timeout`` seconds to
    go, then it and its children are killed, so Ctrl-C always ends the command.
    """
    import psutil
    from fiftyone.core.session import session as fo_session

    services = getattr(fo_session, "_server_services", {})
    service = services.get(getattr(session, "server_port", None))
    child = getattr(service, "child", None)
    if child is None:
        return
    try:
        child.stdin.close()
        child.wait(timeout)
    except psutil.TimeoutExpired:
        for process in [*child.children(recursive=True), child]:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        child.wait(timeout)
    except (OSError, psutil.Error):
        pass
