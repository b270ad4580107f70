"""Prompt templates and template ensembling (CLIP paper, section 3.1.4).

A bare class name ("dog") is a poor text query for a model trained on sentences; putting it
in several sentence templates ("a photo of a dog.") and averaging their normalised
embeddings gives one steadier vector per term. Used by zero-shot classification and tagging.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from clipsearch.arrays import Matrix

#: Prompt templates in the style of CLIP's CIFAR-10 prompt engineering.
TEMPLATES = (
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.",
    "a low contrast photo of a {}.", "a high contrast photo of a {}.", "a bad photo of a {}.",
    "a good photo of a {}.", "a photo of a small {}.", "a photo of a big {}.",
    "a photo of the {}.", "a blurry photo of the {}.", "a bad photo of the {}.",
    "a good photo of the {}.", "a photo of the small {}.", "a photo of the big {}.",
)  # fmt: skip

#: Fewer templates for a tag vocabulary of thousands of terms, which mixes objects, scenes
#: and activities ("a photo of a beach", "a photo of skiing").
TAG_TEMPLATES = (
    "a photo of a {}.", "a photo of the {}.", "a good photo of a {}.",
    "a close-up photo of a {}.", "a photo of {}.", "an image showing {}.",
)  # fmt: skip


def ensemble(vectors: Matrix) -> Matrix:
    """Template ensembling: the normalised mean of normalised prompt embeddings."""
    mean = vectors.mean(axis=0)
    return np.asarray(mean / np.linalg.norm(mean), dtype=np.float32)


def prompt_vectors(
    encode_texts: Callable[[list[str]], Matrix],
    terms: Sequence[str],
    templates: Sequence[str] = TEMPLATES,
) -> Matrix:
    """One ensembled unit vector per term, (len(terms), dim); underscores read as spaces.
    `encode_texts`: a model's (`encoder.encode_texts`) or an index's, in its search space."""
    prompts = [t.format(term.replace("_", " ")) for term in terms for t in templates]
    encoded = np.asarray(encode_texts(prompts), dtype=np.float32)
    grouped = encoded.reshape(len(terms), len(templates), -1)
    return np.stack([ensemble(v) for v in grouped])
