"""Adapters z = W x + b: fitting recovers a known distortion, the identity changes nothing,
a rebuilt index equals one built with the adapter from the start, bad pairs change nothing,
PCA shrinks the index, and the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import clipsearch
from clipsearch.adapters.fit import FitSettings, fit_adapter
from clipsearch.adapters.model import Adapter, unit_rows
from clipsearch.cli import app
from clipsearch.errors import AdapterError, TextSourceError
from tests.conftest import CountingEncoder, write_images


def test_fitting_recovers_a_known_linear_distortion() -> None:
    rng = np.random.default_rng(0)
    dim, photos = 32, 400
    images = unit_rows(rng.normal(size=(photos, dim)))
    rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    image_of = np.repeat(np.arange(photos), 2)  # two captions per photo
    texts = unit_rows(images[image_of] @ rotation.T + 0.05 * rng.normal(size=(2 * photos, dim)))
    settings = FitSettings(weight_decay=0.0, learning_rate=1e-2)
    adapter, report = fit_adapter(images, texts, image_of, settings)
    assert report.before["text_to_image_R@1"] < 0.05  # the raw spaces do not line up
    assert report.after["text_to_image_R@1"] >= 0.95
    assert report.after["image_to_text_R@1"] >= 0.95
    assert (report.validation_images, report.validation_captions) == (80, 160)
    # The maps it learned undo the rotation: W_txt·rotation lines texts up with W_img.
    aligned = adapter.texts(images @ rotation.T) @ adapter.images(images).T
    assert np.mean(np.argmax(aligned, axis=1) == np.arange(photos)) >= 0.95


def _pairs(tmp_path: Path, photos: list[Path]) -> Path:
    words = ["red", "blue", "green", "round", "square", "small", "large", "bright", "dark"]
    rng = np.random.default_rng(1)
    lines = ["image,caption"]
    for photo in photos:
        for _ in range(3):
            lines.append(f"{photo.name},a {' '.join(rng.choice(words, 3))} picture")
    path = tmp_path / "photos" / "pairs.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _search_all(idx: clipsearch.Index, photo: Path) -> list[tuple[list[int], list[float]]]:
    results = []
    for hits in (idx.search("a red square", k=8), idx.search(image=photo, k=8)):
        results.append(([h.id for h in hits], [h.score for h in hits]))
    return results


def test_the_identity_adapter_changes_no_result(
    store: Callable[..., str], tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    photos = write_images(tmp_path / "photos", 12)
    with clipsearch.open(store("db"), encoder=counting_encoder, workers=0) as idx:
        idx.add([tmp_path / "photos"])
        idx.texts.add(_pairs(tmp_path, photos))
        before = _search_all(idx, photos[3])
        texts_before = [h.text for h in idx.search_texts(image=photos[3], k=5)]
        info = idx.record_model()
        identity = idx.adapters.add(Adapter.identity(info.dim), info.identity)
        idx.use_adapter(identity.id)
        after = _search_all(idx, photos[3])
        for (ids_b, scores_b), (ids_a, scores_a) in zip(before, after, strict=True):
            assert ids_a == ids_b
            np.testing.assert_allclose(scores_a, scores_b, atol=1e-6)
        assert [h.text for h in idx.search_texts(image=photos[3], k=5)] == texts_before
        assert idx.search("x", k=1)[0].adapter == f"{identity.id}:identity"
        assert idx.stats().adapter == f"{identity.id}:identity"


def _random_adapter(dim: int, seed: int) -> Adapter:
    rng = np.random.default_rng(seed)
    w_img = (np.eye(dim) + 0.3 * rng.normal(size=(dim, dim))).astype(np.float32)
    w_txt = (np.eye(dim) + 0.3 * rng.normal(size=(dim, dim))).astype(np.float32)
    b = (0.1 * rng.normal(size=dim)).astype(np.float32)
    return Adapter(w_img, b, w_txt, -b, kind="contrastive")


def test_rebuilt_index_equals_building_with_the_adapter_from_the_start(
    store: Callable[..., str], tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    photos = write_images(tmp_path / "photos", 15)
    first = clipsearch.open(store("first"), encoder=counting_encoder, workers=0)
    second = clipsearch.open(store("second"), encoder=counting_encoder, workers=0)
    with first, second:
        adapter = _random_adapter(counting_encoder.info.dim, seed=3)
        first.add([tmp_path / "photos"])  # raw, then adapted: FAISS rebuilt from SQLite
        encoded = counting_encoder.images_encoded
        stored = first.adapters.add(adapter, counting_encoder.info.identity)
        first.use_adapter(stored.id)
        rebuilt = _search_all(first, photos[0])
        # The one image encoded since is the query image: no indexed photo was re-encoded.
        assert counting_encoder.images_encoded == encoded + 1
        info = second.record_model()  # adapted from the start: FAISS filled as batches commit
        second.use_adapter(second.adapters.add(adapter, info.identity).id)
        second.add([tmp_path / "photos"])
        assert _search_all(second, photos[0]) == rebuilt
        # And both equal brute force in the adapted space.
        rows = first.db.rows()
        vectors = adapter.images(np.stack([np.frombuffer(r.vector, np.float32) for r in rows]))
        query = adapter.texts(counting_encoder.encode_texts(["a red square"]))[0]
        order = np.argsort(-(vectors @ query), kind="stable")[:8]
        assert rebuilt[0][0] == [rows[i].id for i in order]


def test_tune_stores_an_adapter_that_improves_and_refuses_one_that_does_not(
    store: Callable[..., str], tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    photos = write_images(tmp_path / "photos", 30)
    pairs = _pairs(tmp_path, photos)
    with clipsearch.open(store("db"), encoder=counting_encoder, workers=0) as idx:
        idx.add([tmp_path / "photos"])
        frozen = FitSettings(learning_rate=0.0, max_epochs=2)  # cannot move from the identity
        refused = idx.tune(pairs, frozen)
        assert not refused.saved and not refused.report.improved
        assert idx.adapters.infos() == [] and idx.adapters.active_id() is None

        kept = idx.tune(pairs, frozen, force=True)
        assert kept.saved and kept.active and idx.adapters.active_id() == kept.adapter.id
        (info,) = idx.adapters.infos()
        metrics = info.metrics
        assert info.pairs == 90 and metrics["fit_images"] + metrics["validation_images"] == 30
        assert idx.search("a red square", k=3)[0].adapter == kept.adapter.label


def test_bad_pairs_files_are_clear_errors_and_change_nothing(
    store: Callable[..., str], tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    photos = write_images(tmp_path / "photos", 6)
    write_images(tmp_path / "elsewhere", 1, start=40)
    with clipsearch.open(store("db"), encoder=counting_encoder, workers=0) as idx:
        idx.add([tmp_path / "photos"])
        bad = tmp_path / "pairs.csv"
        bad.write_text(
            "image,caption\nphotos/img_0000.jpg,a cat\nphotos/gone.jpg,a dog\n"
            "elsewhere/img_0040.jpg,a boat\n"
        )
        with pytest.raises(AdapterError) as error:
            idx.tune(bad)
        message = str(error.value)
        assert "1 image(s) do not exist" in message and "gone.jpg" in message
        assert "1 image(s) are not in the index" in message and "img_0040.jpg" in message
        bad.write_text(f"image,caption\nphotos/{photos[0].name},\n")
        with pytest.raises(TextSourceError, match="empty image or caption"):
            idx.tune(bad)
        assert idx.adapters.infos() == [] and idx.adapters.active_id() is None


def test_pca_shrinks_the_index_and_searches_in_the_reduced_space(
    store: Callable[..., str], tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    write_images(tmp_path / "photos", 40)
    with clipsearch.open(store("db"), encoder=counting_encoder, workers=0) as idx:
        idx.add([tmp_path / "photos"])
        full_bytes = idx.stats().vector_index_bytes
        adapter = idx.reduce(16)
        assert (adapter.in_dim, adapter.out_dim, adapter.label) == (
            counting_encoder.info.dim, 16, f"{adapter.id}:pca-16",
        )  # fmt: skip
        hits = idx.search("a red square", k=5)
        assert idx.vector_index().dim == 16
        rows = idx.db.rows()
        vectors = adapter.images(np.stack([np.frombuffer(r.vector, np.float32) for r in rows]))
        query = adapter.texts(counting_encoder.encode_texts(["a red square"]))[0]
        assert [h.id for h in hits] == [rows[i].id for i in np.argsort(-(vectors @ query))[:5]]
        assert idx.stats().vector_index_bytes < full_bytes
        with pytest.raises(AdapterError, match="dims must be between"):
            idx.reduce(10_000)


def test_cli_tune_and_adapters(store: Callable[..., str], tmp_path: Path) -> None:
    photos = write_images(tmp_path / "photos", 20)
    pairs = _pairs(tmp_path, photos)
    db = store("db")
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, [*args, "--db", db])
        assert result.exit_code == code, result.output
        return result.stdout

    run("index", str(tmp_path / "photos"), "--model", "tiny-random", "--workers", "0", "-q")
    report = json.loads(run("tune", str(pairs), "--epochs", "3", "--force", "--json"))
    assert report["saved"] and report["adapter"].endswith(":contrastive")
    assert "validation" in run("tune", str(pairs), "--epochs", "2", "--force")
    listing = run("adapters", "list")
    assert listing.count("contrastive") == 2 and listing.count("*") == 1
    run("adapters", "pca", "--dims", "8")
    assert "pca-8" in run("stats")
    run("adapters", "use", "none")
    assert "adapter: None" in run("stats")
    run("adapters", "use", "1")
    run("adapters", "remove", "1")
    assert "1:contrastive" not in run("adapters", "list")
    assert json.loads(run("search", "a red square", "--json"))[0].get("adapter") is None
    run("adapters", "use", "7", code=1)
