"""Regenerates ``wsolkit/data/coco_taxonomy.txt``: the 80 COCO classes in a tree cut from WordNet.

Barz & Denzler (VISAPP 2022, Sec. 4.1) map every COCO class by hand to a WordNet synset and prune
the part of WordNet above those synsets to a tree the way YOLO9000 does
(:func:`wsolkit.hierarchy.prune_to_tree`). The mapping below is this project's (the paper does
not publish its own); each choice is the noun sense whose gloss describes what COCO annotates.
COCO's "stop sign" has no synset of its own and maps to ``street_sign.n.01``.

Usage::

    python tools/make_coco_taxonomy.py [--wordnet /usr/share/wordnet] [--out PATH] [--check]

``--check`` regenerates in memory and exits with status 1 if the shipped file differs.
WordNet 3.0 comes from Debian's ``wordnet-base`` package (``/usr/share/wordnet``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from wsolkit.hierarchy import (
    COCO_TAXONOMY_PATH,
    WordNetNouns,
    class_node_name,
    prune_to_tree,
    tree_similarity,
)

#: COCO 2017 class (category id order) -> WordNet 3.0 noun synset.
COCO_SYNSETS = {
    "person": "person.n.01",
    "bicycle": "bicycle.n.01",
    "car": "car.n.01",
    "motorcycle": "motorcycle.n.01",
    "airplane": "airplane.n.01",
    "bus": "bus.n.01",
    "train": "train.n.01",
    "truck": "truck.n.01",
    "boat": "boat.n.01",
    "traffic light": "traffic_light.n.01",
    "fire hydrant": "fireplug.n.01",
    "stop sign": "street_sign.n.01",
    "parking meter": "parking_meter.n.01",
    "bench": "bench.n.01",
    "bird": "bird.n.01",
    "cat": "cat.n.01",
    "dog": "dog.n.01",
    "horse": "horse.n.01",
    "sheep": "sheep.n.01",
    "cow": "cattle.n.01",
    "elephant": "elephant.n.01",
    "bear": "bear.n.01",
    "zebra": "zebra.n.01",
    "giraffe": "giraffe.n.01",
    "backpack": "backpack.n.01",
    "umbrella": "umbrella.n.01",
    "handbag": "bag.n.04",
    "tie": "necktie.n.01",
    "suitcase": "bag.n.06",
    "frisbee": "frisbee.n.01",
    "skis": "ski.n.01",
    "snowboard": "snowboard.n.01",
    "sports ball": "ball.n.01",
    "kite": "kite.n.03",
    "baseball bat": "baseball_bat.n.01",
    "baseball glove": "baseball_glove.n.01",
    "skateboard": "skateboard.n.01",
    "surfboard": "surfboard.n.01",
    "tennis racket": "tennis_racket.n.01",
    "bottle": "bottle.n.01",
    "wine glass": "wineglass.n.01",
    "cup": "cup.n.01",
    "fork": "fork.n.01",
    "knife": "knife.n.01",
    "spoon": "spoon.n.01",
    "bowl": "bowl.n.03",
    "banana": "banana.n.02",
    "apple": "apple.n.01",
    "sandwich": "sandwich.n.01",
    "orange": "orange.n.01",
    "broccoli": "broccoli.n.02",
    "carrot": "carrot.n.03",
    "hot dog": "hotdog.n.02",
    "pizza": "pizza.n.01",
    "donut": "doughnut.n.02",
    "cake": "cake.n.03",
    "chair": "chair.n.01",
    "couch": "sofa.n.01",
    "potted plant": "pot_plant.n.01",
    "bed": "bed.n.01",
    "dining table": "dining_table.n.01",
    "toilet": "toilet.n.02",
    "tv": "television_receiver.n.01",
    "laptop": "laptop.n.01",
    "mouse": "mouse.n.04",
    "remote": "remote_control.n.01",
    "keyboard": "computer_keyboard.n.01",
    "cell phone": "cellular_telephone.n.01",
    "microwave": "microwave.n.02",
    "oven": "oven.n.01",
    "toaster": "toaster.n.02",
    "sink": "sink.n.01",
    "refrigerator": "refrigerator.n.01",
    "book": "book.n.02",
    "clock": "clock.n.01",
    "vase": "vase.n.01",
    "scissors": "scissors.n.01",
    "teddy bear": "teddy.n.01",
    "hair drier": "hand_blower.n.01",
    "toothbrush": "toothbrush.n.01",
}


def build(wordnet_dir: str) -> str:
    """The text of the taxonomy file: a header, then ``"child parent"`` lines."""
    wordnet = WordNetNouns(wordnet_dir)
    synsets = list(COCO_SYNSETS.values())
    if len(set(synsets)) != len(synsets):
        raise SystemExit("two COCO classes map to the same synset; fix COCO_SYNSETS")
    graph = wordnet.hypernym_graph(synsets)
    names = {synset: class_node_name(name) for name, synset in COCO_SYNSETS.items()}
    tree = prune_to_tree(graph, synsets, names=names, source=f"WordNet 3.0 nouns ({wordnet_dir})")
    classes = [class_node_name(name) for name in COCO_SYNSETS]
    similarity = tree_similarity(tree, classes)
    off_diagonal = similarity[~np.eye(len(classes), dtype=bool)]
    header = [
        "# The 80 COCO classes in a tree cut from WordNet 3.0 (YOLO9000 pruning);",
        "# written by tools/make_coco_taxonomy.py, do not edit by hand.",
        "# Lines are 'child parent'; leaves are the COCO class names with spaces as underscores,",
        "# inner nodes are WordNet synsets. Class -> synset:",
        *(f"#   {class_node_name(name)} = {synset}" for name, synset in COCO_SYNSETS.items()),
        f"# {len(tree.nodes)} nodes, height {tree.height}; mean similarity between two different "
        f"classes {off_diagonal.mean():.3f}.",
    ]
    return "\n".join(header + tree.to_lines()) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet", default="/usr/share/wordnet",
                        help="WordNet 3.0 database directory (index.noun, data.noun)")
    parser.add_argument("--out", default=str(COCO_TAXONOMY_PATH), help="where to write the file")
    parser.add_argument("--check", action="store_true",
                        help="compare with the file at --out instead of writing it")
    args = parser.parse_args(argv)
    text = build(args.wordnet)
    out = Path(args.out)
    if args.check:
        same = out.is_file() and out.read_text(encoding="utf-8") == text
        print(f"{out}: {'up to date' if same else 'differs from a fresh build'}")
        return 0 if same else 1
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
