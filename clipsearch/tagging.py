"""Zero-shot tagging: the vocabulary terms nearest to each image.

Each term of a vocabulary (the one shipped with clipsearch, or the user's: one term per line)
is embedded through several prompt templates and ensembled (`search.prompts`), then stored as
a text of kind "vocabulary", so tagging is image→text search restricted to that vocabulary.
Tags of indexed images can be stored and then filtered on (`Filter(tags=...)`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from clipsearch.errors import QueryError
from clipsearch.search.relevance import TAG_CANDIDATES, TAG_Z, sample_ids, tag_z, term_stats
from clipsearch.storage.schema import ZERO_SHOT
from clipsearch.texts import BUILTIN_VOCABULARY, TextCollection, TextHit

if TYPE_CHECKING:
    from clipsearch.storage.db import Database


class TagHost(Protocol):
    """What tagging needs of an index (an `Index`): its images, their vectors in the search
    space, and its texts (the tag vocabulary is one of them)."""

    db: Database

    @property
    def texts(self) -> TextCollection: ...

    def image_vectors(self, ids: Sequence[int]) -> np.ndarray[Any, Any]: ...

    def embed_image_file(self, path: Path) -> np.ndarray[Any, Any]: ...


@dataclass(frozen=True)
class TagResult:
    path: str
    image_id: int | None  # None for a file that is not in the index
    tags: list[tuple[str, float]]  # (term, cosine), best first
    stored: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tags"] = [{"tag": t, "score": s} for t, s in self.tags]
        return out


def _targets(
    index: TagHost, paths: Iterable[str | os.PathLike[str]]
) -> list[tuple[str, int | None]]:
    """(path, indexed id or None) for every file given and every indexed image under every
    folder given, in the order given."""
    by_path = index.db.ids_by_path()
    out: list[tuple[str, int | None]] = []
    for raw in paths:
        path = os.path.abspath(Path(raw).expanduser())
        if os.path.isdir(path):
            prefix = path.rstrip(os.sep) + os.sep
            inside = sorted((p, i) for p, i in by_path.items() if p.startswith(prefix))
            if not inside:
                raise QueryError(
                    f"no indexed images under {path}; index the folder first "
                    f"(`clipsearch index {path}`), or give image files"
                )
            out.extend(inside)
        elif os.path.isfile(path):
            out.append((path, by_path.get(path)))
        else:
            raise QueryError(f"no such file or folder: {path}")
    return out


def _calibrated(index: TagHost, hits: list[list[TextHit]], top: int) -> list[list[TextHit]]:
    """Each image's candidate terms that clear that term's bar (see `tag_images`)."""
    term_ids = sorted({h.id for row in hits for h in row})
    if not term_ids:
        return hits
    sample = sample_ids(index.db.all_ids())
    if len(sample) < 2:
        return [row[:top] for row in hits]  # no collection to measure a bar against
    terms = index.texts.vectors_in_space(term_ids)
    mean, std = term_stats(index.image_vectors(sample), terms)
    bar = {t: (float(m), float(s)) for t, m, s in zip(term_ids, mean, std, strict=True)}
    return [[h for h in row if tag_z(h.score, *bar[h.id]) >= TAG_Z][:top] for row in hits]


def tag_images(
    index: TagHost,
    paths: Iterable[str | os.PathLike[str]],
    *,
    top: int = 5,
    vocabulary: str | os.PathLike[str] | None = None,
    store: bool = False,
    calibrated: bool = True,
) -> list[TagResult]:
    """Up to `top` vocabulary terms for each image, by cosine to the term's prompt ensemble.

    `calibrated` (the default): a term is kept only where the image stands out for it, at
    least `relevance.TAG_Z` standard deviations above the mean score of the index's images
    for that term, among its `TAG_CANDIDATES` nearest terms: a per-term bar, so an image
    gets fewer tags (or none) rather than `top` guesses; False: the plain top `top`.
    Indexed images use their stored vectors (no decoding); other files are encoded. With
    `store`, the tags of indexed images replace their earlier zero-shot tags.
    """
    if top < 1:
        raise QueryError(f"top must be at least 1, got {top}")
    targets = _targets(index, paths)
    if vocabulary is None:
        index.texts.add_builtin_vocabulary()
        source = BUILTIN_VOCABULARY
    else:
        source = index.texts.add(vocabulary, kind="vocabulary").source

    vectors = np.zeros((len(targets), index.texts.vector_index().dim), dtype=np.float32)
    indexed = [(row, i) for row, (_, i) in enumerate(targets) if i is not None]
    if indexed:
        vectors[[row for row, _ in indexed]] = index.image_vectors([i for _, i in indexed])
    for row, (path, image_id) in enumerate(targets):
        if image_id is None:
            vectors[row] = index.embed_image_file(Path(path))

    depth = max(top, TAG_CANDIDATES) if calibrated else top
    hits = index.texts.search_vectors(vectors, k=depth, source=source)
    if calibrated:
        hits = _calibrated(index, hits, top)
    results = [
        TagResult(
            path, image_id, [(h.key or h.text, h.score) for h in row], store and bool(image_id)
        )
        for (path, image_id), row in zip(targets, hits, strict=True)
    ]
    if store:
        index.texts.table.set_tags(
            {r.image_id: r.tags for r in results if r.image_id is not None}, ZERO_SHOT
        )
    return results
