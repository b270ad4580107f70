"""Texts as a searchable modality: sources, incremental re-adds, sidecars, brute-force parity."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text

import clipsearch
from clipsearch.errors import QueryError, TextSourceError
from clipsearch.search.prompts import TAG_TEMPLATES, prompt_vectors
from clipsearch.storage import schema
from clipsearch.storage.db import Database
from tests.conftest import CountingEncoder, write_images

CAPTIONS = [
    ("photos/img_0000.jpg", "a red square on grass"),
    ("photos/img_0001.jpg", "two dogs playing in the snow"),
    ("photos/img_0001.jpg", "a dog running"),
    ("photos/img_0002.jpg", "a dog running"),  # the same words for another image
    ("photos/img_0002.jpg", "an old church at night"),
]


def _write_captions(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("image,caption\n" + "".join(f"{i},{c}\n" for i, c in rows))
    return path


@pytest.fixture
def db(store: Callable[..., str]) -> str:
    """Each test here that opens an index runs on SQLite and on PostgreSQL."""
    return store()


def _open(db: str, encoder: CountingEncoder) -> clipsearch.Index:
    return clipsearch.open(db, encoder=encoder, workers=0)


def _brute_force(query: np.ndarray, vectors: np.ndarray, k: int) -> list[int]:
    scores = vectors @ query
    return [int(i) for i in np.lexsort((np.arange(len(scores)), -scores))[:k]]


def test_text_search_equals_brute_force_over_every_kind(
    db: str, tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    csv_path = _write_captions(tmp_path / "captions.csv", CAPTIONS)
    jsonl = tmp_path / "records.jsonl"
    jsonl.write_text(
        json.dumps({"id": "a1", "text": "a sailing boat at sea", "price": 3}) + "\n\n"
        + json.dumps({"id": 7, "text": "a bowl of soup", "image": "photos/img_0000.jpg"}) + "\n"
    )  # fmt: skip
    vocabulary = tmp_path / "terms.txt"
    vocabulary.write_text("# animals\ndog\ncat # pets\n\nboat\ndog\n")
    with _open(db, counting_encoder) as idx:
        summaries = [idx.texts.add(p) for p in (csv_path, jsonl, vocabulary)]
        assert [(s.kind, s.texts) for s in summaries] == [
            ("captions", 5), ("jsonl", 2), ("vocabulary", 3),
        ]  # fmt: skip
        assert summaries[0].encoded == 4  # "a dog running" twice, encoded once

        texts = [c for _, c in CAPTIONS] + ["a sailing boat at sea", "a bowl of soup"]
        plain = counting_encoder.inner.encode_texts(texts)
        terms = prompt_vectors(
            counting_encoder.inner.encode_texts, ["dog", "cat", "boat"], TAG_TEMPLATES
        )
        everything = np.concatenate([plain, terms])
        labels = [*texts, "dog", "cat", "boat"]

        query = counting_encoder.inner.encode_texts(["a puppy in the snow"])[0]
        hits = idx.search_texts("a puppy in the snow", k=6, distinct=False)
        assert [h.text for h in hits] == [labels[i] for i in _brute_force(query, everything, 6)]
        np.testing.assert_allclose(
            [h.score for h in hits], np.sort(everything @ query)[::-1][:6], atol=1e-5
        )

        only_terms = idx.search_texts("a puppy in the snow", k=3, kind="vocabulary")
        assert [h.text for h in only_terms] == [
            ["dog", "cat", "boat"][i] for i in _brute_force(query, terms, 3)
        ]
        assert {h.kind for h in only_terms} == {"vocabulary"}
        from_file = idx.search_texts("soup", k=10, source=str(jsonl))
        assert sorted(h.key or "" for h in from_file) == ["7", "a1"]
        soup = next(h for h in from_file if h.key == "7")
        assert soup.image_path == str(tmp_path / "photos" / "img_0000.jpg")
        boat = next(h for h in from_file if h.key == "a1")
        assert boat.metadata == {"price": 3}

        all_hits = idx.search_texts("a dog running", k=10, kind="captions")
        assert [h.text for h in all_hits].count("a dog running") == 1  # distinct by default
        repeated = idx.search_texts("a dog running", k=10, kind="captions", distinct=False)
        assert [h.text for h in repeated].count("a dog running") == 2
        assert idx.stats().texts == 10


def test_image_to_text_uses_the_image_query(
    db: str, tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    photos = write_images(tmp_path / "photos", 3)
    _write_captions(tmp_path / "captions.csv", CAPTIONS)
    with _open(db, counting_encoder) as idx:
        idx.add([tmp_path / "photos"])
        idx.texts.add(tmp_path / "captions.csv")
        query = idx.embed_image_file(photos[1])
        texts = list(dict.fromkeys(c for _, c in CAPTIONS))
        vectors = counting_encoder.inner.encode_texts(texts)
        hits = idx.search_texts(image=photos[1], k=4)
        assert [h.text for h in hits] == [texts[i] for i in _brute_force(query, vectors, 4)]


def test_re_adding_encodes_only_what_changed(
    db: str, tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    csv_path = _write_captions(tmp_path / "captions.csv", CAPTIONS)
    with _open(db, counting_encoder) as idx:
        idx.texts.add(csv_path)
        before = counting_encoder.texts_encoded
        again = idx.texts.add(csv_path)
        assert again.unchanged and counting_encoder.texts_encoded == before

        _write_captions(csv_path, [*CAPTIONS[1:], ("photos/img_0003.jpg", "a yellow taxi")])
        changed = idx.texts.add(csv_path)
        assert (changed.texts, changed.encoded) == (5, 1)
        assert counting_encoder.texts_encoded == before + 1
        assert [h.text for h in idx.search_texts("a yellow taxi", k=10)].count(
            "a red square on grass"
        ) == 0  # the dropped row is gone
        assert "a yellow taxi" in [h.text for h in idx.search_texts("a yellow taxi", k=10)]

        idx.texts.remove(str(csv_path))
        assert idx.texts.table.count() == 0
        with pytest.raises(QueryError, match="holds no texts"):
            idx.search_texts("anything")
        with pytest.raises(TextSourceError, match="no text source"):
            idx.texts.remove(str(csv_path))


def test_text_cache_survives_reopen_and_rebuilds_when_stale(
    db: str, tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    _write_captions(tmp_path / "captions.csv", CAPTIONS)
    with _open(db, counting_encoder) as idx:
        idx.texts.add(tmp_path / "captions.csv")
        first = idx.search_texts("a church", k=3)
    assert (idx.cache_dir / "texts.faiss").exists()
    (idx.cache_dir / "texts.json").unlink()  # as after a crash: the cache cannot be trusted
    with _open(db, counting_encoder) as idx:
        assert idx.search_texts("a church", k=3) == first


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"text": "ok"}\nnot json\n{"id": 1}\n["a"]\n', r"line\(s\) 2, 3, 4"),
        ("bad.csv", "file,text\na.jpg,hello\n", "'image' and 'caption'"),
        ("bad.csv", "image,caption\na.jpg,\n,b\n", r"empty image or caption on line\(s\) 2, 3"),
        ("empty.jsonl", "\n\n", "no records"),
        ("notes.md", "dog\n", "pass --kind"),
    ],
)
def test_bad_text_files_change_nothing(
    db: str,
    tmp_path: Path,
    counting_encoder: CountingEncoder,
    name: str,
    content: str,
    message: str,
) -> None:
    good = _write_captions(tmp_path / "good.csv", CAPTIONS)
    bad = tmp_path / name
    bad.write_text(content)
    with _open(db, counting_encoder) as idx:
        idx.texts.add(good)
        with pytest.raises(TextSourceError, match=message):
            idx.texts.add(bad)
        assert [s.path for s in idx.texts.table.sources()] == [str(good)]
        assert idx.texts.table.count() == 5


def test_non_utf8_and_missing_files_are_clear_errors(
    db: str, tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with _open(db, counting_encoder) as idx:
        with pytest.raises(TextSourceError, match="not UTF-8"):
            idx.texts.add(latin)
        with pytest.raises(TextSourceError, match="cannot read"):
            idx.texts.add(tmp_path / "absent.csv")


XMP = """<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF
  xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
  xmlns:dc="http://purl.org/dc/elements/1.1/"><rdf:Description>
 <dc:title><rdf:Alt><rdf:li xml:lang="x-default">Harbour at dawn</rdf:li></rdf:Alt></dc:title>
 <dc:description><rdf:Alt><rdf:li xml:lang="x-default">Fishing boats
   moored in a quiet harbour</rdf:li></rdf:Alt></dc:description>
 <dc:subject><rdf:Bag><rdf:li>boats</rdf:li><rdf:li>harbour</rdf:li></rdf:Bag></dc:subject>
</rdf:Description></rdf:RDF></x:xmpmeta>"""


def test_sidecars_are_indexed_kept_in_step_and_their_keywords_become_tags(
    db: str, tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    photos = write_images(tmp_path / "photos", 4)
    (tmp_path / "photos" / "img_0000.txt").write_text("A red kite over the  hills.\n")
    (tmp_path / "photos" / "img_0001.jpg.xmp").write_text(XMP)
    (tmp_path / "photos" / "README.txt").write_text("not a sidecar: no image of that name")
    (tmp_path / "photos" / "img_0002.xmp").write_text("<broken")
    with _open(db, counting_encoder) as idx:
        summary = idx.add([tmp_path / "photos"])
        assert summary.sidecars == 2
        assert [s.path for s in summary.skipped] == [str(tmp_path / "photos" / "img_0002.xmp")]
        hits = idx.search_texts("kite", k=10, kind="sidecar")
        assert sorted(h.text for h in hits) == [
            "A red kite over the hills.",
            "Fishing boats moored in a quiet harbour",
            "Harbour at dawn",
        ]
        assert {h.image_path for h in hits if "arbour" in h.text} == {str(photos[1])}
        boats = idx.search("boats", k=10, filters=clipsearch.Filter(tags=("Boats",)))
        assert [h.path for h in boats] == [str(photos[1])]

        encoded = counting_encoder.texts_encoded
        assert idx.add([tmp_path / "photos"]).sidecars == 0  # unchanged: not re-read
        assert counting_encoder.texts_encoded == encoded

        (tmp_path / "photos" / "img_0000.txt").write_text("A blue kite.")
        (tmp_path / "photos" / "img_0001.jpg.xmp").unlink()
        assert idx.add([tmp_path / "photos"]).sidecars == 1
        texts = sorted(h.text for h in idx.search_texts("kite", k=10, kind="sidecar"))
        assert texts == ["A blue kite."]


def test_a_version_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'clipsearch.db'}")
    with engine.begin() as conn:
        schema.MIGRATIONS[0](conn)
        conn.execute(text("INSERT INTO meta VALUES ('schema_version', '1'), ('generation', '4')"))
    engine.dispose()
    db = Database.open(tmp_path)
    try:
        assert db.get_meta()["schema_version"] == str(schema.SCHEMA_VERSION)
        assert db.generation() == 4
        with db.engine.connect() as conn:
            tables = set(
                conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'")).scalars()
            )
        assert {"images", "texts", "text_sources", "image_tags"} <= tables
    finally:
        db.close()
