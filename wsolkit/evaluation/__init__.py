"""From a trained model and a split to score maps and metrics, cached on disk.

=================== ===============================================================================
module              what it holds
=================== ===============================================================================
``inference``       :func:`predict_maps`: a model's score maps, by the registered name of the map
``localization``    single-object splits in memory and every standard metric on them
``detection``       multi-object (COCO) splits in memory
``scenes``          COCO detection metrics re-counted with scene weights (bootstrap over scenes)
``cache``           results cached in the run directory, keyed by data, map, code and settings
``summaries``       cached evaluations to table rows and per-image values per seed
=================== ===============================================================================

Evaluation is kept apart from training: a run directory (:mod:`wsolkit.runs`) holds the
checkpoint, and these modules read it back, compute the score maps of a split and feed them to
:class:`wsolkit.metrics.LocalizationEvaluator`.
"""

from .cache import (
    cached_evaluation,
    cached_image_threshold_evaluation,
    cached_result,
    code_fingerprint,
    evaluation_code_fingerprint,
)
from .detection import DetectionSet, load_detection_set
from . import scenes
from .inference import predict_maps
from .summaries import (
    compare_conventions,
    correct_at_validation_choice,
    localization_summary,
    per_image_percent,
    threshold_index,
    validation_choice,
)
from .localization import (
    EvaluationError,
    LocalizationSet,
    ThresholdFn,
    evaluate_image_thresholds,
    evaluate_localization,
    evaluate_maps,
    image_threshold_ious,
    load_localization_set,
    oracle_maps,
    part_area_share,
    part_masks,
)

__all__ = [
    "DetectionSet",
    "EvaluationError",
    "LocalizationSet",
    "ThresholdFn",
    "cached_evaluation",
    "cached_image_threshold_evaluation",
    "cached_result",
    "code_fingerprint",
    "compare_conventions",
    "correct_at_validation_choice",
    "evaluate_image_thresholds",
    "evaluate_localization",
    "evaluate_maps",
    "evaluation_code_fingerprint",
    "image_threshold_ious",
    "load_detection_set",
    "load_localization_set",
    "localization_summary",
    "oracle_maps",
    "part_area_share",
    "part_masks",
    "per_image_percent",
    "predict_maps",
    "scenes",
    "threshold_index",
    "validation_choice",
]
