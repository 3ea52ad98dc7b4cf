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
import re
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
    is_dir = args.output and not args.output.rstrip("/").endswith(".zarr")
    if is_dir and "://" not in args.output:  # -o out/: a directory of stores, made if missing
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
#: ``lazyconn demo --workflow NAME``: name -> module with ``add_arguments(parser)`` (its own
#: options, may be a no-op), ``SMALL`` and ``DEFAULT`` (study sizes, with ``n_subjects``) and
#: ``run(args) -> int``. Add a workflow with one line here.
DEMO_WORKFLOWS = {
    "connectome": "lazyconn.group._demo",
    "regions": "lazyconn.group._demo_regions",
}


def _demo_module(name: str):
    import importlib

    return importlib.import_module(DEMO_WORKFLOWS[name])


def demo_output(workflow: str, small: bool) -> str:
    """Default folder of ``lazyconn demo``: one per workflow and study size."""
    name = "lazyconn-demo" + ("" if workflow == "connectome" else f"-{workflow}")
    return name + ("-small" if small else "")


def add_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workflow",
        choices=list(DEMO_WORKFLOWS),
        default="connectome",
        help="which workflow to run (default: connectome)",
    )
    parser.add_argument(
        "--n-subjects",
        type=int,
        default=None,
        help="subjects to simulate (default: the workflow's; --small: fewer)",
    )
    parser.add_argument(
        "-o",
        "--output",
        default=None,
        help="output folder (default ./lazyconn-demo, ./lazyconn-demo-small with --small, "
        "./lazyconn-demo-<workflow>[-small] for other workflows); re-running reuses its data "
        "and cached results",
    )
    parser.add_argument(
        "--n-workers", type=int, default=2, help="worker processes of the LocalCluster (default 2)"
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        help="use this dask scheduler address instead of a LocalCluster",
    )
    parser.add_argument(
        "--small", action="store_true", help="a small study that runs in seconds, for a quick look"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress")
    for name in DEMO_WORKFLOWS:
        _demo_module(name).add_arguments(parser)


def run_demo(args) -> int:
    """Run a whole workflow on a simulated study (default: Power-264 connectomes, LocalCluster)."""
    if args.output is None:
        args.output = demo_output(args.workflow, args.small)
    return _demo_module(args.workflow).run(args)


#: name -> (add arguments, run). Add a subcommand with one line here.
COMMANDS = {
    "convert": (add_convert, run_convert),
    "info": (add_info, run_info),
    "demo": (add_demo, run_demo),
}


def build_parser() -> argparse.ArgumentParser:
    from lazyconn import __version__

    parser = argparse.ArgumentParser(
        prog="lazyconn", description="Lazy, out-of-core fMRI connectomics (dask + zarr)."
    )
    parser.add_argument("--version", action="version", version=f"lazyconn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (add, run) in COMMANDS.items():
        summary = (run.__doc__ or "").strip().splitlines()[0] if run.__doc__ else None
        sub_parser = sub.add_parser(name, help=summary, description=summary)
        add(sub_parser)
        sub_parser.set_defaults(_run=run, _parser=sub_parser)
    return parser


def _flags(parser: argparse.ArgumentParser) -> dict[str, tuple[str, bool]]:
    """Parameter name -> (its command-line flag, whether the flag takes no value)."""
    out = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and action.dest not in ("help", "version"):
            out[action.dest] = (longs[0], action.nargs == 0)
    return out


def in_cli_terms(message: str, parser: argparse.ArgumentParser) -> str:
    """Rewrite ``name=value`` of the Python API into the flags the user typed.

    lazyconn's messages name function parameters (``pass overwrite=True``); on the command
    line the same advice must name the flag (``--overwrite``).
    """
    for dest, (flag, no_value) in _flags(parser).items():
        if no_value:
            message = re.sub(rf"\b{dest}=True\b", flag, message)
        else:
            message = re.sub(rf"(?<![\w.-]){dest}=", f"{flag}=", message)
    return message


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lazyconn`` command (returns the exit status)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except LazyconnError as exc:
        message = in_cli_terms(str(exc), args._parser)
        print(f"lazyconn {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
