"""``wsolbench data ...``: download, check and describe the real datasets.

Wired into the top-level parser by :mod:`wsolbench.cli` through :func:`add_parser`;
:func:`run` returns the exit status (``data check``: 0 complete and sound, 1 problems
found). User errors propagate as :class:`~wsolbench.errors.UserError` (exit 2 there).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wsolbench.errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``data`` with its sub-commands ``download``, ``check`` and ``info``."""
    from wsolbench.data.download import MIRROR_ENV

    p = subparsers.add_parser(
        "data", help="download, check and describe the real datasets",
        description="Fetch the official dataset files, check a dataset on disk, or show "
                    "what the benchmark knows about a dataset.")
    sub = p.add_subparsers(dest="data_command", metavar="COMMAND")
    sub.required = True

    d = sub.add_parser(
        "download", help="fetch, verify and unpack the official files",
        description="Download the official archives of NAME into --root (resumable, "
                    "checksum-verified, unpacked safely). Afterwards `--root DIR` works for "
                    "`wsolbench data check` and for runs.")
    d.add_argument("name", help="cub, cars, flowers or tinyimagenet")
    d.add_argument("--root", required=True, type=Path, help="folder to put the dataset in")
    d.add_argument("--mirror", default=None,
                   help=f"base URL serving every file as <mirror>/<filename> (default: ${MIRROR_ENV})")
    d.add_argument("--keep-archives", action="store_true",
                   help="keep the downloaded archives after unpacking")
    d.add_argument("--force", action="store_true", help="download again what is in place")
    d.add_argument("--no-optional", action="store_true",
                   help="skip optional files (CUB's segmentations, needed only for PxAP)")
    d.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")

    c = sub.add_parser(
        "check", help="check that a dataset on disk is complete and sound",
        description="Count images per split against the official numbers, decode every image "
                    "and mask, and validate the annotation rows. Exit status 0: complete and "
                    "sound; 1: problems found (listed by category).")
    c.add_argument("name", help="cub, cars, flowers, tinyimagenet, synthetic or wsoleval")
    c.add_argument("--root", required=True, type=Path, help="the dataset folder")
    c.add_argument("--json", type=Path, default=None, metavar="FILE",
                   help="also write a machine-readable report")
    c.add_argument("--metadata", type=Path, default=None,
                   help="wsoleval only: folder with train/ val/ test/ metadata")
    c.add_argument("--no-decode", action="store_true",
                   help="read image headers only (fast; misses truncated files)")
    c.add_argument("--workers", type=int, default=None, help="decoding threads")
    c.add_argument("--examples", type=int, default=3, help="examples shown per category")

    i = sub.add_parser("info", help="what the benchmark knows about a dataset")
    i.add_argument("name", nargs="?", default=None, help="a dataset (default: all)")

    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    cmd = getattr(args, "data_command", None)
    if cmd == "download":
        return _download(args)
    if cmd == "check":
        return _check(args)
    if cmd == "info":
        return _info(args)
    raise UserError("wsolbench data needs a command: download, check or info")


def _download(args: argparse.Namespace) -> int:
    from wsolbench.data.download import download

    download(args.name, args.root, mirror=args.mirror, keep_archives=args.keep_archives,
             force=args.force, include_optional=not args.no_optional, timeout=args.timeout)
    return 0


def _check(args: argparse.Namespace) -> int:
    from wsolbench.data.check import check, write_json

    opts = {}
    if args.name == "wsoleval":
        if args.metadata is None:
            raise UserError("checking wsoleval needs --metadata DIR (the folder with train/ "
                            "val/ test/)")
        opts["metadata"] = args.metadata
    elif args.metadata is not None:
        raise UserError("--metadata applies to the wsoleval dataset only")
    report = check(args.name, args.root, decode=not args.no_decode, workers=args.workers,
                   loader_options=opts, log=lambda m: print(m, file=sys.stderr))
    print(report.format(examples=max(0, args.examples)))
    if args.json is not None:
        write_json(report, args.json)
        print(f"report written to {args.json}")
    return 0 if report.ok else 1


def _info(args: argparse.Namespace) -> int:
    from wsolbench.data.catalog import dataset_info, dataset_infos

    infos = [dataset_info(args.name)] if args.name else dataset_infos()
    for info in infos:
        tables = ", ".join(f"Table {n} ({role})" for role, n in info.tables.items()) or "-"
        counts = (", ".join(f"{k} {v:,}" for k, v in info.expected_counts.items())
                  if info.expected_counts else "varies")
        print(f"{info.name}: {info.display_name}")
        print(f"  paper tables: {tables}")
        print(f"  splits: {counts}; classes: {info.num_classes or 'varies'}; "
              f"boxes: {'yes' if info.has_boxes else 'no'}; masks: {'yes' if info.has_masks else 'no'}")
        print(f"  folder: {info.default_root}/ holding {', '.join(info.expected_files)}")
        for s in info.sources:
            sums = ", ".join(f"{k} {v}" for k, v in (("md5", s.md5), ("sha256", s.sha256)) if v)
            print(f"  source {s.filename}: {s.url or 'no public URL (place by hand)'}"
                  f" [{sums or 'checksum unknown'}]{' (optional)' if s.optional else ''}")
        if info.notes:
            print(f"  notes: {info.notes}")
    return 0
