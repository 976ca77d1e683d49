"""Datasets in the layouts people download: CUB-200-2011, ILSVRC 2012 localization, MS COCO 2017
and OpenImages30k (wsolevaluation's, with its metadata folders: :mod:`wsolkit.data.metadata`).

Every loader parses and checks its annotation files once, when built, and raises
:class:`DatasetFormatError` naming the file, the line and the expected form; images are decoded
per item. A sample is a dict (see :mod:`wsolkit`): ``"image"`` (PIL, or a tensor after a
transform), ``"label"``, all ground-truth ``"boxes"`` ``(K, 4)`` float32 ``[x1, y1, x2, y2]``,
``"mask"`` where the dataset has one, ``"image_id"``, ``"path"``, ``"orig_size"``.

Transforms are called on the whole sample so that boxes and masks move with the image
(:func:`train_transform`, :func:`eval_transform`); :func:`collate` batches samples.
``python -m wsolkit.data verify {cub,ilsvrc,coco,openimages} ROOT --full`` checks a download.
The generator of synthetic datasets in these layouts lives in :mod:`wsolkit.data.synthetic`
(imported on demand only).
"""

from wsolkit.data.coco import COCODetection, COCOObjectCrops
from wsolkit.data.common import (
    BadBoxError,
    BoxChecker,
    DatasetFormatError,
    DatasetWarning,
    EmptySplitError,
    load_image,
)
from wsolkit.data.cub import CUBDataset
from wsolkit.data.ilsvrc import ILSVRCDataset
from wsolkit.data.openimages import OpenImagesDataset
from wsolkit.data.registry import get_dataset, verify
from wsolkit.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    collate,
    eval_transform,
    train_transform,
)

__all__ = [
    "BadBoxError",
    "BoxChecker",
    "COCODetection",
    "COCOObjectCrops",
    "CUBDataset",
    "DatasetFormatError",
    "DatasetWarning",
    "EmptySplitError",
    "ILSVRCDataset",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OpenImagesDataset",
    "collate",
    "eval_transform",
    "get_dataset",
    "load_image",
    "train_transform",
    "verify",
]
