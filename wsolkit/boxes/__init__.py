"""Boxes from score maps, exactly as the reference WSOL evaluation draws them.

================ ==============================================================================
module           what it holds
================ ==============================================================================
``protocol``     what a box is: the reference protocol of Choe et al. (CVPR 2020) step by step,
                 the ``pixel`` alternative, rescaling, IoU, and the reference's own OpenCV loop
``sweep``        the same boxes from one sweep over the pixels per map (union-find, numba)
================ ==============================================================================
"""

from .protocol import (
    CONVENTIONS,
    MODES,
    BoxFormatError,
    ScoreMapError,
    binarize_thresholds,
    box_iou,
    opencv_reference_boxes,
    rescale_boxes,
)
from .sweep import (
    all_component_boxes,
    best_iou_per_mode,
    best_iou_per_threshold,
    boxes_at_threshold,
    largest_component_boxes,
)

__all__ = [
    "BoxFormatError",
    "CONVENTIONS",
    "MODES",
    "ScoreMapError",
    "all_component_boxes",
    "best_iou_per_mode",
    "best_iou_per_threshold",
    "binarize_thresholds",
    "box_iou",
    "boxes_at_threshold",
    "largest_component_boxes",
    "opencv_reference_boxes",
    "rescale_boxes",
]
