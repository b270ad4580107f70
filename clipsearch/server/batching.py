"""Text queries of concurrent requests, encoded together.

One thread owns text encoding. A request hands its texts over and waits; whenever the thread
is free it takes everything that queued up meanwhile (up to `max_batch` texts) and encodes it
in one model call. Under no load a query is encoded alone and at once (no waiting for company);
under load, the time one model call takes is the time the next batch has to gather. It also
keeps concurrent requests from running the model in parallel threads, which on a few cores
only makes them fight over the same cores.

With a `TextCache` (a server's query cache), texts submitted `cached` are first looked up
in it, for the whole batch at once (one read, not one per request), and what the model
makes of the others is kept in it. A text that several requests of a batch ask for is
encoded once.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from clipsearch.models.base import Encoder
from clipsearch.server.admission import OverloadedError

Vectors = np.ndarray[Any, np.dtype[np.float32]]


class TextCache(Protocol):
    """Where a batcher looks for texts' vectors before encoding them."""

    def get(self, texts: list[str]) -> dict[str, Vectors]: ...

    def put(self, vectors: dict[str, Vectors]) -> None: ...


@dataclass
class _Request:
    texts: list[str]
    cached: bool = False
    deadline: float | None = None  # time.monotonic() past which it is dropped, not encoded
    result: Future[Vectors] = field(default_factory=Future)


@dataclass
class BatchStats:
    calls: int = 0  # encode_texts calls made by requests
    batches: int = 0  # model calls made for them
    dropped: int = 0  # requests dropped at their deadline, unencoded

    @property
    def mean_batch(self) -> float:
        return self.calls / self.batches if self.batches else 0.0


#: Texts of one caller encoded in one model call at most: a longer list (the relevance
#: calibration's 512 prompts, a tag vocabulary) is queued in pieces, so a search that comes
#: meanwhile waits for one piece, not for the whole list (a 512-text call held every search
#: for 2 s while a job grew the index).
PIECE = 16


class BatchingEncoder:
    """An `Encoder` whose `encode_texts` is shared by concurrent callers; images pass
    straight through (indexing batches them already)."""

    def __init__(self, inner: Encoder, max_batch: int = 64, cache: TextCache | None = None) -> None:
        self.inner = inner
        self.cache = cache
        self.info = inner.info
        self.input_size = inner.input_size
        self.preprocess = inner.preprocess
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="clipsearch-text-encoder")
        self._thread.daemon = True
        self._thread.start()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # device, and whatever else a model exposes

    def encode_images(self, pixels: Any) -> Vectors:
        return self.inner.encode_images(pixels)

    def encode_texts(self, texts: Sequence[str]) -> Vectors:
        return self.submit(texts).result()

    def submit(
        self, texts: Sequence[str], cached: bool = False, deadline: float | None = None
    ) -> Future[Vectors]:
        """Queue texts for encoding; the future holds their vectors. (An async caller can
        await it through `asyncio.wrap_future` without holding a thread.) `cached`: look
        them up in the cache first, and keep what the model makes of them there. A request
        still queued at its `deadline` (time.monotonic()) is dropped: its future holds an
        `OverloadedError`."""
        texts = list(texts)
        if len(texts) > PIECE:
            return self._in_pieces(texts, cached, deadline)
        request = _Request(texts, cached and self.cache is not None, deadline)
        if not request.texts:
            request.result.set_result(self.inner.encode_texts([]))
        else:
            self._queue.put(request)
        return request.result

    def _in_pieces(self, texts: list[str], cached: bool, deadline: float | None) -> Future[Vectors]:
        """A long list, a piece at a time: each piece is queued when the one before it is
        done, so searches that come meanwhile queue between the pieces."""
        whole: Future[Vectors] = Future()
        done: list[Vectors] = []

        def next_piece(previous: Future[Vectors] | None) -> None:
            if previous is not None:
                failed = previous.exception()
                if failed is not None:
                    whole.set_exception(failed)
                    return
                done.append(previous.result())
            start = PIECE * len(done)
            if start >= len(texts):
                whole.set_result(np.concatenate(done))
                return
            self.submit(texts[start : start + PIECE], cached, deadline).add_done_callback(
                next_piece
            )

        next_piece(None)
        return whole

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            size = len(first.texts)
            stop = False
            while size < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
                size += len(more.texts)
            self._encode(batch)
            if stop:
                return

    def _encode(self, batch: list[_Request]) -> None:
        now = time.monotonic()
        late = [r for r in batch if r.deadline is not None and now > r.deadline]
        for r in late:
            self.stats.dropped += 1
            r.result.set_exception(
                OverloadedError(
                    "the server is overloaded: this search waited for the text encoder past "
                    "its deadline; retry shortly"
                )
            )
        batch = [r for r in batch if r not in late]
        if not batch:
            return
        try:
            vector_of = self._vectors(batch)
        except BaseException as exc:  # handed to every waiting caller; the thread lives on
            for r in batch:
                r.result.set_exception(exc)
            return
        self.stats.calls += len(batch)
        for r in batch:
            r.result.set_result(np.stack([vector_of[t] for t in r.texts]))

    def _vectors(self, batch: list[_Request]) -> dict[str, Vectors]:
        """Each text of the batch, once, to its vector: from the cache where the request
        allows and the cache has it, else from one model call."""
        looked_up = list(dict.fromkeys(t for r in batch if r.cached for t in r.texts))
        known = self.cache.get(looked_up) if self.cache is not None and looked_up else {}
        todo = [t for t in dict.fromkeys(t for r in batch for t in r.texts) if t not in known]
        if not todo:
            return known
        fresh = dict(zip(todo, self.inner.encode_texts(todo), strict=True))
        self.stats.batches += 1
        if self.cache is not None and looked_up:
            wanted = set(looked_up)
            self.cache.put({t: v for t, v in fresh.items() if t in wanted})
        return known | fresh
