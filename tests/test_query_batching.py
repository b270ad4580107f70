"""The server's query batcher: concurrent callers get exactly what the model gives each of
them alone, queued texts share model calls, and a failure reaches every waiting caller."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from clipsearch.models import Encoder
from clipsearch.server.batching import BatchingEncoder


class GatedEncoder:
    """A real encoder whose text calls wait at a gate, so that callers pile up meanwhile."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.info, self.input_size, self.preprocess = inner.info, inner.input_size, inner.preprocess
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[int] = []

    def encode_images(self, pixels: Any) -> Any:
        return self.inner.encode_images(pixels)

    def encode_texts(self, texts: Any) -> Any:
        self.entered.set()
        self.gate.wait(30)
        self.calls.append(len(texts))
        if "boom" in texts:
            raise RuntimeError("model failed")
        return self.inner.encode_texts(texts)


def test_concurrent_queries_share_model_calls_and_get_their_own_vectors(
    tiny_encoder: Encoder,
) -> None:
    gated = GatedEncoder(tiny_encoder)
    batcher = BatchingEncoder(gated)  # type: ignore[arg-type]
    queries = [[f"query {i}"] if i % 3 else [f"query {i}", f"extra {i}"] for i in range(24)]
    try:
        with ThreadPoolExecutor(24) as pool:
            futures = [pool.submit(batcher.encode_texts, queries[0])]
            assert gated.entered.wait(30)  # the first query is in the model, alone
            futures += [pool.submit(batcher.encode_texts, q) for q in queries[1:]]
            while batcher._queue.qsize() < len(queries) - 1:
                threading.Event().wait(0.005)
            gated.gate.set()
            results = [f.result(timeout=30) for f in futures]
    finally:
        batcher.close()
    for query, got in zip(queries, results, strict=True):
        assert np.allclose(got, tiny_encoder.encode_texts(query), atol=1e-5)
    assert gated.calls[0] == len(queries[0])  # the first caller was not kept waiting for company
    assert len(gated.calls) == 2 and sum(gated.calls) == sum(len(q) for q in queries)
    assert (batcher.stats.calls, batcher.stats.batches) == (24, 2)


def test_a_failed_model_call_reaches_every_caller_and_the_batcher_lives_on(
    tiny_encoder: Encoder,
) -> None:
    gated = GatedEncoder(tiny_encoder)
    gated.gate.set()
    batcher = BatchingEncoder(gated)  # type: ignore[arg-type]
    try:
        with pytest.raises(RuntimeError, match="model failed"):
            batcher.encode_texts(["boom"])
        assert batcher.encode_texts(["fine"]).shape == (1, tiny_encoder.info.dim)
    finally:
        batcher.close()


def test_a_server_leaves_a_core_to_its_searches(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The served model's text tower runs on every core but one (at least one); with
    CLIPSEARCH_THREADS set, that setting rules."""
    import os

    from clipsearch.server.service import text_threads
    from tests.conftest import need_runtime
    from tests.serving import build_collection, make_service

    need_runtime("onnx")
    monkeypatch.delenv("CLIPSEARCH_THREADS", raising=False)
    assert text_threads() == max(1, (os.cpu_count() or 1) - 1)
    collection = build_collection(tmp_path)
    service = make_service(collection, runtime="onnx")
    try:
        inner = service.index.encoder.inner  # type: ignore[attr-defined]
        assert inner.text_threads == text_threads()
        session = inner.text_tower.session
        assert session.get_session_options().intra_op_num_threads == text_threads()
    finally:
        service.close()
    monkeypatch.setenv("CLIPSEARCH_THREADS", "2")
    service = make_service(collection, runtime="onnx")
    try:
        assert service.index.encoder.inner.text_threads is None  # type: ignore[attr-defined]
    finally:
        service.close()


def test_a_long_list_goes_in_pieces_and_a_search_waits_for_one_piece_only(
    tiny_encoder: Encoder,
) -> None:
    """512 calibration prompts once made every search wait for one 512-text model call:
    a long list now goes in pieces of PIECE texts, and a query that comes meanwhile is
    encoded after the piece in the model, not after the whole list."""
    from clipsearch.server.batching import PIECE

    seen: list[list[str]] = []

    class Recording(GatedEncoder):
        def encode_texts(self, texts: Any) -> Any:
            seen.append(list(texts))
            return super().encode_texts(texts)

    gated = Recording(tiny_encoder)
    batcher = BatchingEncoder(gated)  # type: ignore[arg-type]
    long = [f"prompt {i}" for i in range(5 * PIECE + 3)]
    try:
        whole = batcher.submit(long)
        assert gated.entered.wait(30)  # the first piece is in the model
        query = batcher.submit(["a dog on a beach"])
        gated.gate.set()
        vector = query.result(timeout=30)
        vectors = whole.result(timeout=30)
    finally:
        batcher.close()
    assert len(seen) == 6  # five pieces and what was left, the query riding with one
    assert all(len(texts) <= PIECE + 1 for texts in seen)
    assert "a dog on a beach" in seen[1]  # encoded with the second piece, not after the last
    np.testing.assert_allclose(vectors, tiny_encoder.encode_texts(long), atol=1e-5)
    np.testing.assert_allclose(vector, tiny_encoder.encode_texts(["a dog on a beach"]), atol=1e-5)
