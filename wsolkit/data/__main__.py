"""Command line of :mod:`wsolkit.data`.

``python -m wsolkit.data export-metadata {cub,ilsvrc,openimages} ROOT --split SPLIT --out DIR``
writes the split's ground truth as a wsolevaluation metadata folder (:mod:`wsolkit.data.metadata`),
so that the reference can be run on exactly the images, labels, boxes and masks wsolkit evaluates.

``python -m wsolkit.data verify {cub,ilsvrc,coco,openimages} ROOT [--full] [--split SPLIT ...]
[--workers N]`` checks a dataset root and prints what it found, what the loaders leave out (with
counts) and what is missing or malformed; the exit code is 0 when the root is fine and 1
otherwise. ``--full`` also decodes every image and mask, with a progress bar: only this finds
truncated or empty image files. ``python -m wsolkit.data generate ...`` writes a synthetic
dataset (see :mod:`wsolkit.data.synthetic`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from wsolkit.data.registry import VERIFY_SPLITS, verify


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["generate"]:
        # Imported here so that verify works without the generator's own dependencies.
        from wsolkit.data import synthetic

        return synthetic.main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m wsolkit.data", description="Check or generate datasets."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="check a dataset root")
    check.add_argument("name", choices=sorted(VERIFY_SPLITS))
    check.add_argument("root")
    check.add_argument(
        "--full",
        action="store_true",
        help="also decode every image and mask (finds truncated or empty files)",
    )
    check.add_argument(
        "--split", action="append", help="a split to check (repeatable); default: all"
    )
    check.add_argument(
        "--workers", type=int, default=None, help="threads that decode (default: up to 8)"
    )
    commands.add_parser("generate", help="write a synthetic dataset (see wsolkit.data.synthetic)")
    export = commands.add_parser("export-metadata",
                                 help="write a split as a wsolevaluation metadata folder")
    export.add_argument("name", choices=["cub", "ilsvrc", "openimages"])
    export.add_argument("root")
    export.add_argument("--split", required=True, help="e.g. test (cub) or val (ilsvrc)")
    export.add_argument("--out", required=True, help="the folder to write the files to")
    args = parser.parse_args(argv)
    if args.command == "export-metadata":
        from wsolkit.data.metadata import metadata_from_dataset, write_metadata

        try:
            written = write_metadata(metadata_from_dataset(args.name, args.root, args.split),
                                     args.out)
        except ValueError as error:
            parser.error(str(error))
        print(f"wrote {', '.join(str(p) for p in written)}")
        return 0
    try:
        problems = verify(
            args.name,
            args.root,
            args.full,
            splits=args.split,
            log=print,
            progress=True,
            workers=args.workers,
        )
    except ValueError as error:
        parser.error(str(error))
    if problems:
        print(f"{len(problems)} problems in {args.root}:")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    if not args.full:
        print(
            "checked the annotations and the image headers only; add --full to decode every "
            "image and mask (the only way to find truncated or empty image files)"
        )
    print(f"{args.name} at {args.root}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
