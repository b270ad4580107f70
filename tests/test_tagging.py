"""Zero-shot tagging: brute-force parity, stored tags, tag filters, the CLI, and real signal
with the reference model on real CIFAR-10 images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import clipsearch
from clipsearch.cli import app
from clipsearch.errors import QueryError
from clipsearch.indexer.text_sources import builtin_vocabulary
from clipsearch.search.prompts import TAG_TEMPLATES, prompt_vectors
from tests.conftest import CountingEncoder, write_images
from tests.test_mini import CIFAR_TEST, _cifar_images

TERMS = ["dog", "cat", "red car", "sailing boat", "mountain", "kitchen"]


def _vocabulary(tmp_path: Path) -> Path:
    path = tmp_path / "terms.txt"
    path.write_text("\n".join(TERMS) + "\n")
    return path


def test_tags_are_the_nearest_prompt_ensembles(
    tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    photos = write_images(tmp_path / "photos", 5)
    loose = write_images(tmp_path / "elsewhere", 1, start=50)[0]
    term_vectors = prompt_vectors(counting_encoder.inner.encode_texts, TERMS, TAG_TEMPLATES)
    with clipsearch.open(tmp_path / "db", encoder=counting_encoder, workers=0) as idx:
        idx.add([tmp_path / "photos"])
        results = idx.tag(
            [tmp_path / "photos", loose], top=3, vocabulary=_vocabulary(tmp_path), calibrated=False
        )
        assert [r.path for r in results] == [*map(str, photos), str(loose)]
        assert results[-1].image_id is None  # not indexed: encoded from the file
        for result in results:
            image = idx.embed_image_file(Path(result.path))
            scores = term_vectors @ image
            expected = [TERMS[i] for i in np.argsort(-scores, kind="stable")[:3]]
            assert [t for t, _ in result.tags] == expected
            np.testing.assert_allclose(
                [s for _, s in result.tags], np.sort(scores)[::-1][:3], atol=1e-5
            )


def test_stored_tags_filter_searches(tmp_path: Path, counting_encoder: CountingEncoder) -> None:
    write_images(tmp_path / "photos", 8)
    with clipsearch.open(tmp_path / "db", encoder=counting_encoder, workers=0) as idx:
        idx.add([tmp_path / "photos"])
        results = idx.tag(
            [tmp_path / "photos"], top=2, vocabulary=_vocabulary(tmp_path), store=True,
            calibrated=False,
        )  # fmt: skip
        assert all(r.stored for r in results)
        stored = idx.texts.table.tags_for([r.image_id for r in results if r.image_id])
        for r in results:
            assert r.image_id is not None
            assert [t for t, _ in stored[r.image_id]] == [t for t, _ in r.tags]
        for term in TERMS:
            tagged = {r.path for r in results if term in dict(r.tags)}
            hits = idx.search("anything", k=8, filters=clipsearch.Filter(tags=(term,)))
            assert {h.path for h in hits} == tagged
        first, second = results[0].tags[0][0], results[0].tags[1][0]
        both = idx.search("x", k=8, filters=clipsearch.Filter(tags=(first, second)))
        assert {h.path for h in both} == {
            r.path for r in results if {first, second} <= set(dict(r.tags))
        }

        # A changed image loses its zero-shot tags (they described the old picture).
        changed = Path(results[0].path)
        write_images(tmp_path / "tmp", 1, start=99)[0].replace(changed)
        idx.add([tmp_path / "photos"])
        assert results[0].image_id not in idx.texts.table.tags_for([results[0].image_id])


def test_tagging_errors_are_clear(tmp_path: Path, counting_encoder: CountingEncoder) -> None:
    (tmp_path / "empty").mkdir()
    with clipsearch.open(tmp_path / "db", encoder=counting_encoder, workers=0) as idx:
        with pytest.raises(QueryError, match="no indexed images under"):
            idx.tag([tmp_path / "empty"], vocabulary=_vocabulary(tmp_path))
        with pytest.raises(QueryError, match="no such file"):
            idx.tag([tmp_path / "absent.jpg"], vocabulary=_vocabulary(tmp_path))


def test_the_shipped_vocabulary_is_a_few_thousand_clean_terms() -> None:
    lines = builtin_vocabulary().decode("utf-8").splitlines()
    terms = [t for t in lines if t and not t.startswith("#")]
    assert 1500 <= len(terms) <= 5000
    assert len({t.lower() for t in terms}) == len(terms)
    assert {"dog", "beach", "birthday party", "skiing", "tabby cat"} <= set(terms)


def test_cli_tag_texts_and_tag_filter(tmp_path: Path) -> None:
    write_images(tmp_path / "photos", 4)
    (tmp_path / "captions.csv").write_text(
        "image,caption\nphotos/img_0000.jpg,a dog on a beach\nphotos/img_0001.jpg,a red car\n"
    )
    db = str(tmp_path / "db")
    runner = CliRunner()

    def run(*args: str) -> object:
        result = runner.invoke(app, [*args, "--db", db])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout) if "--json" in args else result.stdout

    run("index", str(tmp_path / "photos"), "--model", "tiny-random", "--workers", "0", "-q")
    added = run("texts", "add", str(tmp_path / "captions.csv"), "--json")
    assert added == [
        {"source": str(tmp_path / "captions.csv"), "kind": "captions", "texts": 2, "encoded": 2,
         "unchanged": False, "missing_images": 0, "first_missing": None}
    ]  # fmt: skip
    assert "2  captions" in str(run("texts", "list"))
    hits = run("search", "--image", str(tmp_path / "photos" / "img_0001.jpg"), "--texts", "--json")
    assert isinstance(hits, list) and {h["text"] for h in hits} == {"a dog on a beach", "a red car"}
    vocabulary = str(_vocabulary(tmp_path))
    tags = run("tag", str(tmp_path / "photos"), "--vocabulary", vocabulary, "-k", "1", "--store",
               "--top-k", "--json")  # fmt: skip
    assert isinstance(tags, list) and len(tags) == 4
    term = tags[0]["tags"][0]["tag"]
    tagged = sorted(t["path"] for t in tags if t["tags"][0]["tag"] == term)
    found = run("search", "x", "--tag", term, "--json")
    assert isinstance(found, list) and sorted(h["path"] for h in found) == tagged
    run("texts", "remove", str(tmp_path / "captions.csv"))
    assert str(tmp_path / "captions.csv") not in str(run("texts", "list"))


# -- the reference model on real CIFAR-10 images ---------------------------------------------


@pytest.fixture(scope="module")
def cifar_index(tmp_path_factory: pytest.TempPathFactory) -> object:
    if not CIFAR_TEST.exists():
        pytest.skip(f"needs the shared data set at {CIFAR_TEST}")
    root = tmp_path_factory.mktemp("cifar")
    _cifar_images(root, per_class=8)
    with clipsearch.open(root / "db", model="clipsearch-mini", workers=0) as idx:
        idx.add([root / "cifar10-test"])
        yield idx, root


def _class_of(path: str | None) -> str:
    return Path(path or "").parent.name


def test_reference_model_captions_real_images(cifar_index: object, tmp_path: Path) -> None:
    idx, _ = cifar_index  # type: ignore[misc]
    records = tmp_path / "captions.jsonl"
    captions = {
        "cat": "a cat sitting indoors", "truck": "a big truck on the road",
        "ship": "a ship sailing on the sea", "horse": "a brown horse in a field",
        "dog": "a dog playing with a ball", "airplane": "an airplane flying in the sky",
    }  # fmt: skip
    records.write_text(
        "".join(json.dumps({"id": c, "text": t}) + "\n" for c, t in captions.items())
    )
    idx.texts.add(records)
    rows = idx.db.rows()
    right = sum(
        idx.search_texts(image=row.path, k=1, source=str(records))[0].key == _class_of(row.path)
        for row in rows
    )
    # 4 classes x 8 images, 6 captions to choose from (chance: 1 in 6).
    print(f"{right}/{len(rows)} images captioned with their class")
    assert right >= 0.75 * len(rows), f"{right}/{len(rows)} images got their own class's caption"


def test_reference_model_tags_real_images_with_the_shipped_vocabulary(cifar_index: object) -> None:
    idx, root = cifar_index  # type: ignore[misc]
    results = idx.tag([root / "cifar10-test"], top=5)
    right = sum(any(_class_of(r.path) in t for t, _ in r.tags) for r in results)
    # 1,890 terms to choose from; the class word ("cat", "truck", ...) among the top 5.
    print(f"{right}/{len(results)} images tagged with their class")
    assert right >= 0.7 * len(results), f"{right}/{len(results)} images tagged with their class"


def test_every_terms_score_for_many_images_at_once(cifar_index: object) -> None:
    """256 queries x all 1,890 terms: more hits than SQLite takes as one query's parameters
    (250,000 in Debian's build)."""
    idx, _ = cifar_index  # type: ignore[misc]
    idx.texts.add_builtin_vocabulary()
    terms = idx.texts.table.count()
    rows = idx.db.rows()
    vectors = np.tile(idx.image_vectors([r.id for r in rows]), (8, 1))
    found = idx.texts.search_vectors(vectors, k=terms)
    assert len(vectors) * terms > 250_000
    assert [len(row) for row in found] == [terms] * len(vectors)
    assert all(len({h.id for h in row}) == terms for row in found)


def test_calibrated_tags_clear_each_terms_bar(
    tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    """By default a term is kept only where the image stands out for it against the
    collection (TAG_Z standard deviations over the term's mean), so images get fewer tags
    than k rather than k guesses."""
    from clipsearch.search.relevance import TAG_CANDIDATES, TAG_Z

    write_images(tmp_path / "photos", 12)
    term_vectors = prompt_vectors(counting_encoder.inner.encode_texts, TERMS, TAG_TEMPLATES)
    with clipsearch.open(tmp_path / "db", encoder=counting_encoder, workers=0) as idx:
        idx.add([tmp_path / "photos"])
        plain = idx.tag([tmp_path / "photos"], top=4, vocabulary=_vocabulary(tmp_path),
                        calibrated=False)  # fmt: skip
        kept = idx.tag([tmp_path / "photos"], top=4, vocabulary=_vocabulary(tmp_path))
        images = idx.image_vectors(sorted(r.image_id for r in kept if r.image_id))
        scores = images @ term_vectors.T
        mean, std = scores.mean(axis=0), scores.std(axis=0)
        for before, after in zip(plain, kept, strict=True):
            assert len(after.tags) <= len(before.tags) <= 4
            image = idx.image_vectors([after.image_id])[0]  # type: ignore[list-item]
            nearest = [TERMS[i] for i in np.argsort(-(term_vectors @ image))[:TAG_CANDIDATES]]
            for term, score in after.tags:
                t = TERMS.index(term)
                assert term in nearest and (score - mean[t]) / std[t] >= TAG_Z - 1e-4
        assert sum(len(r.tags) for r in kept) < sum(len(r.tags) for r in plain)


def test_a_tag_filter_takes_in_the_tags_below_it(tmp_path: Path) -> None:
    """A beagle is a dog and a dog an animal: --tag dog and --tag animal find it; --tag
    beagle does not find a plain "dog"."""
    from tests.serving import XMP

    photos = write_images(tmp_path / "photos", 3)
    Path(f"{photos[0]}.xmp").write_text(XMP.replace("harbour", "Beagle"))
    Path(f"{photos[1]}.xmp").write_text(XMP.replace("harbour", "dog"))
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx:
        idx.add([tmp_path / "photos"])

        def tagged(tag: str) -> set[str]:
            hits = idx.search("x", k=3, filters=clipsearch.Filter(tags=(tag,)), mode="semantic")
            return {Path(h.path).name for h in hits}

        assert tagged("DOG") == {photos[0].name, photos[1].name}
        assert tagged("animal") == {photos[0].name, photos[1].name}
        assert tagged("beagle") == {photos[0].name}
        assert tagged("cat") == set()
