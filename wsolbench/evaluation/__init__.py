"""evaluation."""

# The shared evaluator (both protocols), its geometry, PxAP and the paper's box rule / S
# score. Everything here is numpy + OpenCV; no model code and no torch.

from wsolbench.evaluation.boxes import iou, paper_box, s_score, s_scores
from wsolbench.evaluation.evaluator import PROTOCOLS, Evaluator, evaluate
from wsolbench.evaluation.geometry import Geometry
from wsolbench.evaluation.pxap import pxap_from_histograms
from wsolbench.evaluation.sweep import normalize_minmax, threshold_grid

__all__ = [
    "PROTOCOLS",
    "Evaluator",
    "Geometry",
    "evaluate",
    "iou",
    "normalize_minmax",
    "paper_box",
    "pxap_from_histograms",
    "s_score",
    "s_scores",
    "threshold_grid",
]
