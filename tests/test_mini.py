"""The shipped reference model loads offline and has real signal."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

import clipsearch
from clipsearch.models import RuntimeChoice, load_encoder, parse_model_spec
from clipsearch.models.spec import MINI_CHECKPOINT
from tests.conftest import REPO

CIFAR_TEST = REPO.parent / "shared" / "datasets" / "cifar10" / "test.tar.gz"


@pytest.fixture(scope="module")
def mini() -> object:
    """The torch model itself (the optimised runtimes' parity is tests/test_runtimes.py)."""
    return load_encoder("clipsearch-mini", device="cpu", runtime=RuntimeChoice("torch"))


def test_checkpoint_is_small_and_identified_by_content() -> None:
    assert MINI_CHECKPOINT.stat().st_size < 25 * 1024 * 1024
    identity = parse_model_spec("clipsearch-mini").identity
    assert identity.startswith("clipsearch-mini:file-sha256-")


def test_text_tower_is_the_real_pretrained_minilm(mini: object) -> None:
    vectors = mini.encode_texts(["a puppy", "a dog", "a truck", "a lorry"])  # type: ignore[attr-defined]
    sims = vectors @ vectors.T
    assert vectors.shape == (4, 384)
    assert sims[0, 1] > sims[0, 2] + 0.1  # puppy is nearer dog than truck
    assert sims[3, 2] > sims[3, 1] + 0.1  # lorry is nearer truck than dog


def _cifar_images(dest: Path, per_class: int) -> dict[str, list[Path]]:
    wanted = {"cat": [], "truck": [], "ship": [], "horse": []}  # type: dict[str, list[Path]]
    with tarfile.open(CIFAR_TEST) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if len(parts) == 3 and parts[1] in wanted and len(wanted[parts[1]]) < per_class:
                tar.extract(member, dest, filter="data")
                wanted[parts[1]].append(dest / member.name)
            if all(len(v) == per_class for v in wanted.values()):
                break
    return wanted


@pytest.mark.skipif(not CIFAR_TEST.exists(), reason=f"needs the shared data set at {CIFAR_TEST}")
def test_real_queries_find_the_right_cifar_images(tmp_path: Path) -> None:
    _cifar_images(tmp_path, per_class=8)
    with clipsearch.open(tmp_path / "db", model="clipsearch-mini", workers=0) as idx:
        summary = idx.add([tmp_path / "cifar10-test"])
        assert summary.added == 32
        rows = idx.db.rows()
        label = {r.id: Path(r.path).parent.name for r in rows}
        vectors = {r.id: np.frombuffer(r.vector, np.float32) for r in rows}
        cat_text = idx.encoder.encode_texts(["a photo of a cat"])[0]

        cat_scores = [float(vectors[i] @ cat_text) for i in vectors if label[i] == "cat"]
        truck_scores = [float(vectors[i] @ cat_text) for i in vectors if label[i] == "truck"]
        assert np.mean(cat_scores) > np.mean(truck_scores)

        for query, wanted in [("a cat", "cat"), ("a truck", "truck"), ("a ship at sea", "ship")]:
            top = [label[h.id] for h in idx.search(text=query, k=8)]
            assert top.count(wanted) >= 5, (query, top)


def test_trimmed_padding_gives_the_same_text_vectors(mini: object) -> None:
    texts = ["a cat", "a very long caption about two dogs running along a sandy beach at dusk"]
    trimmed = mini.encode_texts(texts)  # type: ignore[attr-defined]
    tokenizer = mini.tokenizer  # type: ignore[attr-defined]
    assert tokenizer(texts).shape[1] < 64  # the padding nobody uses is cut off
    try:
        mini.tokenizer = tokenizer.inner  # type: ignore[attr-defined]  # full 64-token padding
        padded = mini.encode_texts(texts)  # type: ignore[attr-defined]
    finally:
        mini.tokenizer = tokenizer  # type: ignore[attr-defined]
    np.testing.assert_allclose(trimmed, padded, atol=1e-5)
