"""Queries as vectors: texts (through the query cache, so a repeated query loads no model),
image files, stored images, and fused `Query`s, in the index's search space."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from clipsearch.errors import ImageDecodeError, QueryImageError
from clipsearch.search.query import Query, QueryPart, fuse
from clipsearch.storage.query_cache import QueryCache

if TYPE_CHECKING:
    from clipsearch.adapters.space import SearchSpace
    from clipsearch.models import Encoder

#: Texts per model call when many are encoded at once (a progress bar step).
ENCODE_CHUNK = 256


class EmbeddingHost(Protocol):
    """What query embedding needs of an index."""

    @property
    def encoder(self) -> Encoder: ...

    def space(self) -> SearchSpace: ...

    def image_vectors(self, ids: Sequence[int]) -> np.ndarray[Any, Any]: ...


class QueryEmbedder:
    """Embeds queries for one index. `progress`: show a bar when many texts are encoded;
    `max_pixels`: the decoding limit for query images, as for indexed ones."""

    def __init__(
        self, host: EmbeddingHost, cache: QueryCache, max_pixels: int, progress: bool
    ) -> None:
        self.host = host
        self.cache = cache
        self.max_pixels = max_pixels
        self.progress = progress

    def query(self, q: Query) -> np.ndarray[Any, Any]:
        """The unit vector of a fused query (texts encoded together, in one model call)."""
        texts = [str(p.value) for p in q.parts if p.kind == "text"]
        encoded: Iterator[Any] = iter(
            self.host.space().texts(self.raw_text_queries(texts)) if texts else []
        )

        def vector(part: QueryPart) -> np.ndarray[Any, Any]:
            if part.kind == "text":
                return np.asarray(next(encoded))
            if part.kind == "image":
                return self.image_file(Path(str(part.value)))
            return np.asarray(self.host.image_vectors([int(part.value)])[0])

        # Parts are embedded in order, so the texts come out of `encoded` in order too.
        positive = [(vector(p), p.weight) for p in q.positive]
        negative = [(vector(p), p.weight) for p in q.negative]
        return fuse(positive, negative)

    def raw_text_queries(self, texts: list[str]) -> np.ndarray[Any, Any]:
        """Model embeddings of query texts, from the query cache where it has them (then no
        model is loaded at all), else encoded and cached."""
        found, missing = self.cached(texts)
        if missing:
            fresh = dict(zip(missing, self.host.encoder.encode_texts(missing), strict=True))
            self.remember(fresh)
            found |= fresh
        return np.stack([found[t] for t in texts])

    def cached(self, texts: Sequence[str]) -> tuple[dict[str, np.ndarray[Any, Any]], list[str]]:
        """(cached embeddings by text, the texts the cache lacks, once each)."""
        found = self.cache.get(self.host.space().info.identity, texts)
        return found, list(dict.fromkeys(t for t in texts if t not in found))

    def remember(self, vectors: dict[str, np.ndarray[Any, Any]], later: bool = False) -> None:
        """Keep model embeddings of query texts (as `encoder.encode_texts` gives them);
        `later`: see `QueryCache.put`."""
        self.cache.put(self.host.space().info.identity, vectors, later)

    def image_file(self, path: Path) -> np.ndarray[Any, Any]:
        """An image file (indexed or not) as a vector in the search space."""
        from clipsearch.indexer.decode import decode_image, register_heif

        register_heif()
        encoder = self.host.encoder
        try:
            decoded = decode_image(
                str(path), encoder.preprocess, encoder.input_size, self.max_pixels
            )
        except ImageDecodeError as exc:
            raise QueryImageError(str(path), exc.reason) from exc
        return np.asarray(self.host.space().images(encoder.encode_images(decoded.pixels[None]))[0])

    def raw_texts(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        """The model's embeddings of `texts`; many of them go a chunk at a time under a
        progress bar (on stderr): the tag vocabulary alone is 11,000 prompts, an evaluation
        4,000 captions."""
        from tqdm import tqdm

        texts = list(texts)
        encoder = self.host.encoder
        if len(texts) <= ENCODE_CHUNK:
            return np.asarray(encoder.encode_texts(texts))
        chunks = []
        with tqdm(
            total=len(texts), unit="text", desc="embedding texts", file=sys.stderr,
            disable=not self.progress,
        ) as bar:  # fmt: skip
            for start in range(0, len(texts), ENCODE_CHUNK):
                chunk = texts[start : start + ENCODE_CHUNK]
                chunks.append(np.asarray(encoder.encode_texts(chunk)))
                bar.update(len(chunk))
        return np.concatenate(chunks)
