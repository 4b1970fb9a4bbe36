"""The ``pointtrack`` command. Each subcommand module has ``register(subparsers)`` and sets
``func(args) -> int | None`` on its parser."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

# Subcommand modules, in the order `pointtrack --help` lists them.
_COMMANDS = ["track", "dataset", "eval", "plot", "preprocess", "demo"]
# Actions of ``pointtrack dataset`` kept in modules of their own: each has
# ``register_action(actions)`` taking the dataset command's sub-parsers.
_DATASET_ACTIONS = ["overlays"]


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``pointtrack track: error: ...``) and exit 2
    like every other error, instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"pointtrack: error: {self.prog}: {' '.join(message.split())} "
                     f"(see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="pointtrack",
        description="Track any point through videos and video datasets (CoTracker3, FiftyOne).",
    )
    parser.add_argument("--version", action="version", version=f"pointtrack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue  # a subcommand not built yet
            raise
        module.register(sub)
    if "dataset" in sub.choices:
        actions = next(a for a in sub.choices["dataset"]._actions
                       if isinstance(a, argparse._SubParsersAction))
        for name in _DATASET_ACTIONS:
            importlib.import_module(f".{name}", __name__).register_action(actions)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that are the user's to fix. Only modules already imported can have
    raised, so none is imported here (fiftyone takes seconds to import)."""
    errors: list[type[BaseException]] = [CLIError]
    for module, name in [
        ("pointtrack.trackers.base", "PromptError"),
        ("pointtrack.video", "VideoError"),
        ("pointtrack.tracks", "TracksError"),
        ("pointtrack.models.weights", "CheckpointError"),
        ("pointtrack.fiftyone", "DatasetError"),
    ]:
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line, like the CLI's errors (not Python's file:line: source form)."""
    print(f"pointtrack: warning: {' '.join(str(message).split())}", file=sys.stderr)


class _LogLine(logging.Handler):
    """The library's warnings (a dataset sample that failed, a process that died) as one CLI
    line each, written through tqdm so that a progress bar on the terminal is not cut."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            text = " ".join(self.format(record).split())
            tqdm.write(f"pointtrack: {record.levelname.lower()}: {text}", file=sys.stderr)
        except Exception:  # noqa: BLE001 -- logging must not raise
            self.handleError(record)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    # The bundled mongod 6.0 draws a deprecation notice on every connection: keep the CLI's
    # stderr for our own one-line errors.
    logging.getLogger("fiftyone.core.odm.database").setLevel(logging.ERROR)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    log = logging.getLogger("pointtrack")
    handler = _LogLine(logging.WARNING)
    log.addHandler(handler)  # removed again: callers of main() keep their own logging
    try:
        with warnings.catch_warnings():  # restores showwarning for callers of main()
            warnings.showwarning = _one_line_warning
            return int(args.func(args) or 0)
    except _user_errors() as e:
        # One line whatever the message: library errors (torch, FFmpeg) can span several.
        print(f"pointtrack: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:
        # The file system's answer (a full disk, no permission): the user's to fix, and a
        # traceback would hide the one line that says so.
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"pointtrack: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pointtrack: interrupted", file=sys.stderr)
        return 130
    finally:
        log.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
