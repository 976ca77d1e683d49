"""Evaluate a folder of score maps: ``python -m wsolkit.evaluate``.

Ground truth from a wsolevaluation metadata folder::

    python -m wsolkit.evaluate MAPS --metadata wsolevaluation/metadata/CUB/test

or from a wsolkit dataset root::

    python -m wsolkit.evaluate MAPS --dataset cub /data/CUB_200_2011 --split test
    python -m wsolkit.evaluate MAPS --dataset openimages wsolevaluation/dataset/OpenImages
    python -m wsolkit.evaluate MAPS --dataset coco /data/coco2017 --split val

``MAPS`` is a folder of ``<image id>.npy`` files or one ``.npz`` (see
:mod:`wsolkit.evaluation.folder`). Options: ``--predictions FILE`` (``<image id>,<class>...``,
best first) for top-1 / top-5; ``--mask-root DIR`` where the metadata names mask files (a
reference checkout's ``dataset/OpenImages`` is found by itself);
``--interval`` (default 0.001, the reference's); ``--iou 30 50 70``; ``--cam-threshold 0.2``
for the localization at one threshold; ``--out results.json`` (default: next to the maps). The
table of the headline numbers goes to the terminal; the JSON holds every curve.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from wsolkit.evaluation.folder import (
    ScoreMapError,
    ScoreMaps,
    evaluate_score_maps,
    format_results,
    read_predictions,
)
from wsolkit.data.metadata import MetadataError, metadata_from_dataset, read_metadata

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wsolkit.evaluate",
        description="Evaluate score maps under the protocol of Choe et al. (wsolevaluation).")
    parser.add_argument("maps", help="a folder of <image id>.npy files, or one .npz")
    truth = parser.add_mutually_exclusive_group(required=True)
    truth.add_argument("--metadata", help="a wsolevaluation metadata folder (image_ids.txt, "
                       "class_labels.txt, localization.txt, and image_sizes.txt for boxes)")
    truth.add_argument("--dataset", nargs=2, metavar=("NAME", "ROOT"),
                       help="a wsolkit dataset root: cub, ilsvrc, openimages or coco (one "
                       "item per image and category: <file>/<category id>), and its folder")
    parser.add_argument("--split", default=None, help="the split of --dataset (cub and "
                        "openimages: test, ilsvrc and coco: val by default)")
    parser.add_argument("--predictions", help="<image id>,<class>[,<class>...] per line")
    parser.add_argument("--mask-root", help="the folder the metadata's mask paths start from")
    parser.add_argument("--interval", type=float, default=0.001,
                        help="threshold step (default 0.001: 1,000 thresholds)")
    parser.add_argument("--iou", type=int, nargs="+", default=[30, 50, 70],
                        help="IoU thresholds in percent (default 30 50 70)")
    parser.add_argument("--cam-threshold", type=float, default=None,
                        help="also report localization at this threshold")
    parser.add_argument("--size", type=int, default=224, help="evaluation size (default 224)")
    parser.add_argument("--out", help="the JSON file (default: <maps>.results.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for bad input, with its message)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.metadata:
            truth = read_metadata(args.metadata)
        else:
            name, root = args.dataset
            split = args.split or {"ilsvrc": "val", "coco": "val"}.get(name, "test")
            truth = metadata_from_dataset(name, root, split)
        maps = ScoreMaps(args.maps, size=args.size)
        predictions = (read_predictions(args.predictions, truth.image_ids)
                       if args.predictions else None)
        results = evaluate_score_maps(maps, truth, interval=args.interval,
                                      iou_thresholds=args.iou, cam_threshold=args.cam_threshold,
                                      predictions=predictions, mask_root=args.mask_root,
                                      progress=not args.no_progress)
    except (MetadataError, ScoreMapError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(str(Path(args.maps)).rstrip("/") + ".results.json")
    from wsolkit.io import atomic_write_text

    atomic_write_text(json.dumps(results, indent=1) + "\n", out)
    print(format_results(results))
    print(f"every curve: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
