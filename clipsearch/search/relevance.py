"""Calibrated relevance: when a search can say "no good match".

A raw cosine means different things for different models (one model's good match scores
0.25, another's 0.6) and for different collections. So each index measures its model's
*null*: the scores of pairs that have nothing to do with each other. For text queries that
is a bank of generic concept prompts ("a photo of a violin.", 512 of the shipped
vocabulary) against a sample of the index's images; for image queries, random pairs of its
images. A hit's score is then read as a z-score over that null,

    z = (score - null mean) / null std,

and the bank gives the bar: `gate` is the z that the *best* hit of a typical (median)
concept reaches in this collection. A query whose best hit does not beat what a random
everyday concept finds is "no good match". The relevance shown is that z on a 0-1 scale,
`relevance = sigmoid(2 (z - gate))`: 0.5 at the bar, never negative.

`auto` keeps a search's hits only if its best hit reaches the bar (relevance 0.5), and then
keeps the hits down to one null standard deviation below it (relevance 0.12), so that a real
query keeps the weaker hits after its best one. A number keeps the hits at or above it. Text
queries whose words the model does not know at all (see `known_share`) have no good match.

Limits: the null is computed from the index's own images, so it moves with the collection;
a query about a subject that is absent but looks like one that is present ("a penguin on ice"
in a collection of dogs in snow) can pass, as the model itself cannot tell them apart.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from clipsearch.errors import QueryError

#: Concept prompts in the text bank (every n-th term of the shipped vocabulary).
BANK_SIZE = 512
BANK_TEMPLATE = "a photo of a {}."
#: Images sampled from the index to measure the null.
SAMPLE_IMAGES = 2000
#: Slope of the 0-1 relevance scale, per null standard deviation.
SLOPE = 2.0
#: `auto` keeps hits down to this many null standard deviations below the bar.
AUTO_FLOOR_BELOW = 1.0
#: Image queries: the bar is this quantile of each sampled image's best neighbour, so that
#: an example like the collection's own photos almost always passes.
IMAGE_GATE_QUANTILE = 0.05
#: A text query with fewer of its words known to the model than this has no good match.
MIN_KNOWN_SHARE = 0.5
#: Recompute the calibration when the collection has grown or shrunk by this factor.
RECALIBRATE_FACTOR = 1.25
#: Version of the calibration recipe: a new one invalidates cached calibrations.
RECIPE = 1

MinRelevance = Literal["auto", "off"] | float
Modality = Literal["text", "image"]


@dataclass(frozen=True)
class Null:
    """Scores of unrelated pairs for one query modality, and the bar (`gate`, a z)."""

    mean: float
    std: float
    gate: float

    def z(self, scores: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return (np.asarray(scores, dtype=np.float64) - self.mean) / max(self.std, 1e-9)

    def relevance(self, scores: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return to_relevance(self.z(scores) - self.gate)


@dataclass(frozen=True)
class Calibration:
    """What an index knows about its model's scores (see the module docstring)."""

    space: str  # the search space's identity: model + adapter
    images: int  # images in the index when measured
    text: Null
    image: Null
    recipe: int = RECIPE

    def null(self, modality: Modality) -> Null:
        return self.text if modality == "text" else self.image

    def fresh_for(self, space: str, images: int) -> bool:
        if self.space != space or self.recipe != RECIPE:
            return False
        low, high = sorted((max(self.images, 1), max(images, 1)))
        return high / low < RECALIBRATE_FACTOR

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> Calibration:
        data = json.loads(raw)
        return cls(
            data["space"], int(data["images"]), Null(**data["text"]), Null(**data["image"]),
            int(data.get("recipe", 0)),
        )  # fmt: skip


def to_relevance(excess: np.ndarray[Any, Any] | float) -> np.ndarray[Any, Any]:
    """z above the bar -> 0-1 (0.5 at the bar)."""
    return np.asarray(1.0 / (1.0 + np.exp(-SLOPE * np.asarray(excess, dtype=np.float64))))


#: The relevance `auto` keeps weaker hits down to, once the best hit passed the bar.
AUTO_FLOOR = float(to_relevance(-AUTO_FLOOR_BELOW))


def parse_min_relevance(value: str | float | None) -> MinRelevance:
    """`auto`, `off`, or a number in [0, 1] (from the CLI or an HTTP request)."""
    if value is None:
        return "off"
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("auto", "off"):
            return word  # type: ignore[return-value]
        try:
            value = float(word)
        except ValueError:
            raise QueryError(
                f"min relevance must be auto, off or a number from 0 to 1, got {value!r}"
            ) from None
    if not (0.0 <= float(value) <= 1.0):
        raise QueryError(f"min relevance must be from 0 to 1, got {value}")
    return float(value)


def cut(relevance: Sequence[float], rule: MinRelevance) -> int:
    """How many of a ranked list's hits (relevance best first, as ranked) to keep."""
    if rule == "off" or not relevance:
        return len(relevance)
    if rule == "auto":
        if max(relevance) < 0.5:
            return 0
        floor = AUTO_FLOOR
    else:
        floor = float(rule)
    return sum(1 for r in relevance if r >= floor)


def keyword_relevance(coverage: float) -> float:
    """A hit whose words hold `coverage` (at least half) of the query's words and phrases is
    a good match whatever the model says: 0.75 for half, 1.0 for all."""
    return 0.5 + 0.5 * min(max(coverage, 0.0), 1.0)


# -- measuring the null ------------------------------------------------------------------


def bank_terms(vocabulary: Sequence[str], size: int = BANK_SIZE) -> list[str]:
    """`size` concept prompts spread evenly over the vocabulary."""
    step = max(1, len(vocabulary) // size)
    return [BANK_TEMPLATE.format(t) for t in list(vocabulary)[::step][:size]]


def measure(
    space: str,
    images: np.ndarray[Any, Any],
    bank: np.ndarray[Any, Any],
    total_images: int,
) -> Calibration:
    """The calibration from a sample of the index's image vectors (in the search space) and
    the text bank's vectors (same space)."""
    images = np.asarray(images, dtype=np.float32)
    bank = np.asarray(bank, dtype=np.float32)
    if len(images) < 2:
        raise QueryError("relevance needs at least two indexed images to be calibrated")
    text_scores = bank @ images.T
    text_mean, text_std = float(text_scores.mean()), float(text_scores.std())
    best = (text_scores.max(axis=1) - text_mean) / max(text_std, 1e-9)
    text = Null(text_mean, text_std, float(np.median(best)))

    pairs = images @ images.T
    off_diagonal = ~np.eye(len(images), dtype=bool)
    image_mean, image_std = float(pairs[off_diagonal].mean()), float(pairs[off_diagonal].std())
    np.fill_diagonal(pairs, -np.inf)
    nearest = (pairs.max(axis=1) - image_mean) / max(image_std, 1e-9)
    image = Null(image_mean, image_std, float(np.quantile(nearest, IMAGE_GATE_QUANTILE)))
    return Calibration(space, total_images, text, image)


def sample_ids(ids: np.ndarray[Any, Any], size: int = SAMPLE_IMAGES) -> list[int]:
    """Up to `size` ids spread evenly over all of them (deterministic)."""
    ids = np.sort(np.asarray(ids, dtype=np.int64))
    if len(ids) > size:
        ids = ids[np.linspace(0, len(ids) - 1, size).astype(np.int64)]
    return [int(i) for i in ids]


class CalibrationFile:
    """The calibration cached beside the index's FAISS files (a cache: deleting it only
    costs one re-measurement)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "relevance.json"

    def load(self) -> Calibration | None:
        try:
            return Calibration.from_json(self.path.read_text())
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, calibration: Calibration) -> None:
        """Atomically, and only if the folder can be written (a read-only index keeps the
        calibration in memory)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".relevance-", dir=self.path.parent)
            with os.fdopen(fd, "w") as f:
                f.write(calibration.to_json())
            os.replace(tmp, self.path)
        except OSError:
            return


# -- the model's words -------------------------------------------------------------------

_WORD = re.compile(r"\w+", re.UNICODE)
_SUFFIXES = ("s", "es", "ing", "ed", "er", "ers", "ly")


def known_share(text: str, known: Callable[[str], bool]) -> float:
    """The share of a query's words the model knows as whole words (with a plain English
    suffix stripped), 1.0 for a query with no words; digits count as known."""
    words = _WORD.findall(text.lower())
    if not words:
        return 1.0
    hits = sum(1 for w in words if w.isdigit() or _known(w, known))
    return hits / len(words)


def _known(word: str, known: Callable[[str], bool]) -> bool:
    if known(word):
        return True
    return any(
        word.endswith(s) and len(word) - len(s) >= 3 and known(word[: -len(s)]) for s in _SUFFIXES
    )


# -- tags ----------------------------------------------------------------------------------

#: A tag is kept for an image when the image stands this many standard deviations above the
#: collection's mean score for that tag (`tag_z`), among the image's `TAG_CANDIDATES` nearest
#: terms: a per-tag bar, so a term that every photo scores high on ("a photo") needs more.
TAG_Z = 1.0
TAG_CANDIDATES = 10


def term_stats(
    images: np.ndarray[Any, Any], terms: np.ndarray[Any, Any]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Each term's mean and standard deviation of cosine over a sample of images."""
    scores = np.asarray(images, dtype=np.float32) @ np.asarray(terms, dtype=np.float32).T
    return scores.mean(axis=0), np.maximum(scores.std(axis=0), 1e-6)


def tag_z(score: float, mean: float, std: float) -> float:
    return (score - mean) / std
