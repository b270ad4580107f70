"""Retrieval quality, measured through the same code path as real search."""

from clipsearch.evaluation.captions import CaptionReport, evaluate_captions
from clipsearch.evaluation.classes import ClassReport, evaluate_classes

__all__ = ["CaptionReport", "ClassReport", "evaluate_captions", "evaluate_classes"]
