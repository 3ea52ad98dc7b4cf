"""The ``lazyconn`` command line.

Each subcommand is two functions, registered in :data:`COMMANDS`:
``add_<name>(parser)`` declares its arguments on its own sub-parser and
``run_<name>(args) -> int`` runs it. To add a subcommand, write the two functions and
add one line to ``COMMANDS`` (its help is the first line of ``run_<name>``'s docstring).
Errors of lazyconn's own classes are printed as ``lazyconn <cmd>: error: ...`` with
exit status 1; argument errors exit with status 2 (argparse).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from lazyconn.exceptions import LazyconnError


def _chunks(text: str) -> tuple[int, ...]:
    try:
        chunks = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--chunks={text!r} is not valid; expected comma-separated integers such as 16,16,16"
        ) from None
    if not chunks or any(c < 1 for c in chunks):
        raise argparse.ArgumentTypeError(
            f"--chunks={text!r} is not valid; expected positive integers such as 16,16,16"
        )
    return chunks


def _storage_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(
            "--storage-option needs KEY=VALUE (VALUE as JSON if it parses, else a string)"
        )
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _nested(options: list[tuple[str, object]] | None) -> dict | None:
    """KEY=VALUE pairs to a dict; dotted keys nest (client_kwargs.endpoint_url=...)."""
    if not options:
        return None
    out: dict = {}
    for key, value in options:
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _add_storage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage-option",
        metavar="KEY=VALUE",
        action="append",
        type=_storage_option,
        help="fsspec option for URLs, repeatable; dotted keys nest "
        "(e.g. client_kwargs.endpoint_url=http://127.0.0.1:9000). Prefer environment "
        "variables for credentials: command lines are visible to other users.",
    )


# --- convert ----------------------------------------------------------------------
def add_convert(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", nargs="+", help=".nii / .nii.gz paths or URLs")
    parser.add_argument(
        "-o",
        "--output",
        help="destination store (one source, name ending in .zarr) or directory for "
        "<name>.zarr stores; default: next to each source",
    )
    parser.add_argument("--chunks", type=_chunks, help="stored chunk shape x,y,z[,t]")
    parser.add_argument("--dtype", help="store scaled values in this float dtype")
    parser.add_argument("--overwrite", action="store_true", help="replace existing stores")
    parser.add_argument("--scratch-dir", help="local directory for staged .nii.gz voxels")
    parser.add_argument("--scheduler", help="dask.distributed scheduler address")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_storage_options(parser)


def _destinations(srcs: list[str], output: str | None) -> list[str]:
    from lazyconn.io._fs import strip_suffix

    if output is not None and len(srcs) == 1 and output.rstrip("/").endswith(".zarr"):
        return [output]
    out = []
    for src in srcs:
        name = strip_suffix(src) + ".zarr"
        if output is None:
            head = src.rstrip("/").rsplit("/", 1)
            out.append(name if len(head) == 1 else f"{head[0]}/{name}")
        else:
            out.append(f"{output.rstrip('/')}/{name}")
    return out


def run_convert(args) -> int:
    """Convert NIfTI runs to lazyconn zarr stores (streaming, bounded memory)."""
    from lazyconn.io.convert import convert

    dsts = _destinations(args.src, args.output)
    if args.output and len(dsts) > 1 and "://" not in args.output:
        os.makedirs(args.output, exist_ok=True)
    client = None
    if args.scheduler:
        from distributed import Client

        client = Client(args.scheduler)
    try:
        convert(
            list(args.src),
            dsts,
            chunks=args.chunks,
            overwrite=args.overwrite,
            dtype=args.dtype,
            storage_options=_nested(args.storage_option),
            scratch_dir=args.scratch_dir,
            progress=not args.no_progress,
        )
    finally:
        if client is not None:
            client.close()
    for src, dst in zip(args.src, dsts, strict=True):
        print(f"{src} -> {dst}")
    return 0


# --- info -------------------------------------------------------------------------
def add_info(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", nargs="+", help="images: .nii, .nii.gz or zarr stores")
    _add_storage_options(parser)


def run_info(args) -> int:
    """Show shape, dtype, voxel size, TR and chunks of images (reads headers only)."""
    from lazyconn.image import load

    for src in args.src:
        print(repr(load(src, storage_options=_nested(args.storage_option))))
    return 0


# --- demo -------------------------------------------------------------------------
def add_demo(parser: argparse.ArgumentParser) -> None:
    from lazyconn.group._demo import add_arguments

    add_arguments(parser)


def run_demo(args) -> int:
    """Simulate a study, convert it to Zarr, compute Power-264 connectomes on a LocalCluster."""
    from lazyconn.group._demo import run

    return run(args)


#: name -> (add arguments, run). Add a subcommand with one line here.
COMMANDS = {
    "convert": (add_convert, run_convert),
    "info": (add_info, run_info),
    "demo": (add_demo, run_demo),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lazyconn", description="Lazy, out-of-core fMRI connectomics (dask + zarr)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (add, run) in COMMANDS.items():
        summary = (run.__doc__ or "").strip().splitlines()[0] if run.__doc__ else None
        sub_parser = sub.add_parser(name, help=summary, description=summary)
        add(sub_parser)
        sub_parser.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lazyconn`` command (returns the exit status)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except LazyconnError as exc:
        print(f"lazyconn {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
