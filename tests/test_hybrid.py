"""Hybrid search: the keyword index over the words an index holds (file and folder names,
sidecars, XMP keywords, EXIF camera), kept in step with incremental indexing, fused with the
semantic ranking; on both stores (SQLite, PostgreSQL)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import event
from typer.testing import CliRunner

import clipsearch
from clipsearch.cli import app
from clipsearch.errors import QueryError
from clipsearch.search.hybrid import KeywordHit, evidence, fuse
from clipsearch.search.keywords import KeywordQuery
from clipsearch.storage.keyword_index import fts5_expression
from clipsearch.storage.words import path_words, split_words
from tests.conftest import make_image, write_images
from tests.serving import XMP
from tests.stores import PostgresServer

runner = CliRunner()


def _names(hits: list[clipsearch.Hit]) -> list[str]:
    return [Path(h.path).name for h in hits]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    write_images(root / "Paris trip", 4)
    write_images(root / "misc", 6, start=20)
    make_image(50).save(root / "misc" / "golden_gate-bridgeAtNight.jpg")
    make_image(51).save(root / "misc" / "gate_golden.jpg")
    (root / "misc" / "img_0020.txt").write_text("a red bicycle leaning on a stone wall")
    (root / "misc" / "img_0021.jpg.xmp").write_text(XMP)  # keyword "harbour"
    exif = Image.Exif()
    exif[271], exif[272] = "Fujifilm", "X-T30"
    make_image(52).save(root / "misc" / "DSCF0001.jpg", exif=exif)
    return root


def test_words_of_paths() -> None:
    assert split_words("golden_gate-bridgeAtNight") == "golden gate bridge At Night"
    assert path_words("/home/ann/photos/2021/Paris trip/IMG_0001.JPG") == (
        "IMG 0001",
        "photos 2021 Paris trip",
    )
    # Below the indexed folder only: its own name, and those above it, are in every path.
    assert path_words("/home/ann/photos/2021/x.jpg", ["/home/ann/photos"]) == ("x", "2021")


def test_query_words_phrases_and_stop_words() -> None:
    q = KeywordQuery.parse('a dog on "the Golden Gate" at night')
    assert q.terms == ("dog", "night") and q.phrases == ("the golden gate",)
    assert fts5_expression(q.terms, q.phrases) == '"the golden gate" AND ("dog" OR "night")'
    assert KeywordQuery.parse("the a").terms == ("the", "a")  # only stop words: keep them
    unclosed = KeywordQuery.parse('say "it works')  # an unclosed quote is no phrase
    assert unclosed.phrases == () and unclosed.terms == ("say", "works")
    assert KeywordQuery.parse("").empty


def test_fusion_keeps_the_model_order_alone_and_lifts_words_that_single_out_an_image() -> None:
    semantic = [(1, 4.0), (2, 3.5), (3, 3.0), (4, 1.0)]
    assert fuse(semantic, []) == [1, 2, 3, 4]
    # One image whose words hold the whole query: lifted above the model's best.
    alone = evidence([KeywordHit(4, 9.0, 1.0)])
    assert alone == {4: 1.0}
    assert fuse(semantic, [(4, 1.0, alone[4])])[0] == 4
    # Twenty images sharing the query's words evenly: each gets a twentieth of the bonus,
    # too little to pass the model's best, though they still move up among themselves.
    shared = [KeywordHit(i, 5.0, 0.5) for i in range(10, 30)]
    weights = evidence(shared)
    assert all(w == pytest.approx(0.25 / 20) for w in weights.values())
    fused = fuse(semantic, [(h.id, 1.0, weights[h.id]) for h in shared])
    assert fused[:3] == [1, 2, 3]
    # A hit that out-scores the others takes nearly all the evidence.
    ahead = evidence([KeywordHit(7, 12.0, 1.0), KeywordHit(8, 6.0, 1.0), KeywordHit(9, 6.0, 1.0)])
    assert ahead[7] > 0.99 and ahead[8] < 0.01
    # Re-rankers' order holds: the i-th image of the model's list gets the i-th best z.
    assert fuse([(2, 3.5), (1, 4.0), (3, 3.0)], []) == [2, 1, 3]


def test_names_folders_sidecars_keywords_and_camera_are_found(
    photos: Path, store: Callable[..., str]
) -> None:
    with clipsearch.open(store(), model="tiny-random", workers=0) as idx:
        idx.add([photos])
        assert set(_names(idx.search("golden gate", k=3, mode="keyword"))) == {
            "golden_gate-bridgeAtNight.jpg", "gate_golden.jpg",
        }  # fmt: skip
        assert _names(idx.search("bridge at night", k=3))[0] == "golden_gate-bridgeAtNight.jpg"
        assert set(_names(idx.search("paris", k=10, mode="keyword"))) == {
            f"img_{i:04d}.jpg" for i in range(4)
        }
        assert _names(idx.search("bicycles", k=3))[0] == "img_0020.jpg"  # stemmed
        assert _names(idx.search("harbour", k=3))[0] == "img_0021.jpg"
        assert _names(idx.search("fujifilm", k=3, mode="keyword")) == ["DSCF0001.jpg"]
        top = idx.search("golden gate", k=3)[0]
        assert top.keyword_score is not None and -1.0 <= top.score <= 1.0  # cosine kept
        # Each store searches words its own way: FTS5 in a cache file, or PostgreSQL's own.
        backend = "Fts5Keywords" if idx.location.is_sqlite else "PostgresKeywords"
        assert type(idx.keyword_index()).__name__ == backend


def test_a_quoted_phrase_must_match_as_a_phrase(photos: Path, tmp_path: Path) -> None:
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx:
        idx.add([photos])
        hits = idx.search('"golden gate"', k=10, mode="keyword")
        assert _names(hits) == ["golden_gate-bridgeAtNight.jpg"]  # not "gate_golden"
        hybrid = idx.search('"golden gate"', k=10)
        assert _names(hybrid)[0] == "golden_gate-bridgeAtNight.jpg" and len(hybrid) == 10
        held = [h for h in hybrid if h.keyword_score is not None]
        assert _names(held) == ["golden_gate-bridgeAtNight.jpg"]
        assert len(idx.search('"golden gate"', k=10, mode="semantic")) == 10


def test_the_keyword_index_follows_renames_deletions_and_sidecar_edits(
    photos: Path, store: Callable[..., str]
) -> None:
    with clipsearch.open(store(), model="tiny-random", workers=0) as idx:
        idx.add([photos])
        assert "golden_gate-bridgeAtNight.jpg" in _names(idx.search("golden", k=5, mode="keyword"))
        misc = photos / "misc"
        os.rename(misc / "golden_gate-bridgeAtNight.jpg", misc / "lighthouse at dusk.jpg")
        (misc / "img_0020.txt").write_text("an old tram in the rain")
        (misc / "gate_golden.jpg").unlink()
        summary = idx.add([photos])
        assert summary.moved == 1 and summary.removed == 1
        assert idx.search("golden", k=5, mode="keyword") == []
        assert _names(idx.search("lighthouse", k=5, mode="keyword")) == ["lighthouse at dusk.jpg"]
        assert idx.search("bicycle", k=5, mode="keyword") == []
        assert _names(idx.search("tram", k=5, mode="keyword")) == ["img_0020.jpg"]


def test_stored_tags_are_words_too(photos: Path, tmp_path: Path) -> None:
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx:
        idx.add([photos])
        vocabulary = tmp_path / "terms.txt"
        vocabulary.write_text("zebra\nquokka\n")
        one = photos / "misc" / "img_0022.jpg"
        tagged = idx.tag([one], top=1, vocabulary=vocabulary, store=True, calibrated=False)
        tag = tagged[0].tags[0][0]
        assert "img_0022.jpg" in _names(idx.search(tag, k=20, mode="keyword"))


def test_keyword_mode_loads_no_model(photos: Path, tmp_path: Path) -> None:
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx:
        idx.add([photos])
    with clipsearch.open(tmp_path / "db", create=False) as idx:
        assert _names(idx.search("harbour", k=3, mode="keyword")) == ["img_0021.jpg"]
        assert idx._encoder is None
        with pytest.raises(QueryError, match="mode must be one of"):
            idx.search("harbour", mode="fuzzy")
        with pytest.raises(QueryError, match="needs words"):
            idx.search(image=photos / "misc" / "img_0020.jpg", mode="keyword")


def test_without_word_matches_hybrid_is_the_semantic_ranking(photos: Path, tmp_path: Path) -> None:
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx:
        idx.add([photos])
        for query in ("zebra crossing", "a photo of something"):
            hybrid = idx.search(query, k=8)
            semantic = idx.search(query, k=8, mode="semantic")
            assert [h.id for h in hybrid] == [h.id for h in semantic]


def test_cli_and_http_modes(photos: Path, tmp_path: Path) -> None:
    from clipsearch.server import ServerSettings, create_app
    from tests.serving import LocalClient

    db = str(tmp_path / "db")
    with clipsearch.open(db, model="tiny-random", workers=0) as idx:
        idx.add([photos])
    out = runner.invoke(app, ["search", "harbour", "--db", db, "--mode", "keyword", "--json"])
    assert out.exit_code == 0, out.output
    assert [Path(h["path"]).name for h in json.loads(out.stdout)] == ["img_0021.jpg"]
    bad = runner.invoke(app, ["search", "harbour", "--db", db, "--mode", "fuzzy"])
    assert bad.exit_code != 0 and "mode must be one of" in bad.stderr
    with LocalClient(create_app(ServerSettings(db=db, workers=0))) as client:
        body = client.get("/api/search", params={"q": "golden gate", "k": 3}).json()
        assert {Path(h["path"]).name for h in body["hits"][:2]} == {
            "golden_gate-bridgeAtNight.jpg", "gate_golden.jpg",
        }  # fmt: skip
        assert body["hits"][0]["keyword_score"] > 0
        body = client.post("/api/search", json={"text": '"golden gate"', "mode": "keyword"}).json()
        assert [Path(h["path"]).name for h in body["hits"]] == ["golden_gate-bridgeAtNight.jpg"]


def _with_iptc(jpeg: bytes, keywords: list[str], title: str) -> bytes:
    """A JPEG with an APP13 (Photoshop 3.0, 8BIM 0x0404) segment of IPTC-IIM datasets."""
    records = b"".join(
        b"\x1c\x02" + bytes([dataset]) + len(value).to_bytes(2, "big") + value
        for dataset, value in [(5, title.encode()), *((25, k.encode()) for k in keywords)]
    )
    records += b"\x00" * (len(records) % 2)
    resource = b"8BIM\x04\x04\x00\x00" + len(records).to_bytes(4, "big") + records
    payload = b"Photoshop 3.0\x00" + resource
    segment = b"\xff\xed" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + segment + jpeg[2:]


def test_titles_and_keywords_embedded_in_the_file_are_words(tmp_path: Path) -> None:
    import io

    folder = tmp_path / "photos"
    write_images(folder, 3)
    packet = XMP.replace("harbour", "Alfama").encode()
    make_image(60).save(folder / "xmp_inside.jpg", xmp=packet)
    buffer = io.BytesIO()
    make_image(61).save(buffer, "JPEG")
    (folder / "iptc_inside.jpg").write_bytes(
        _with_iptc(buffer.getvalue(), ["Lighthouse", "Portugal"], "Cabo da Roca")
    )
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx:
        idx.add([folder])
        assert _names(idx.search("alfama", k=3, mode="keyword")) == ["xmp_inside.jpg"]
        assert _names(idx.search("lighthouse", k=3, mode="keyword")) == ["iptc_inside.jpg"]
        assert _names(idx.search('"cabo da roca"', k=3, mode="keyword")) == ["iptc_inside.jpg"]


def test_the_first_keyword_searches_from_many_threads_at_once_all_answer(
    photos: Path, store: Callable[..., str]
) -> None:
    """The keyword index is made on the first search; 16 threads making it at once once
    raced (UNIQUE constraint failed: state.key) and answered 500 from the server."""
    threads = 16
    with clipsearch.open(store(), model="tiny-random", workers=0) as idx:
        idx.add([photos])
        start = threading.Barrier(threads)

        def first_search(_: int) -> list[str]:
            start.wait(timeout=30)
            return sorted(_names(idx.search("golden gate", k=3, mode="keyword")))

        with ThreadPoolExecutor(threads) as pool:
            found = list(pool.map(first_search, range(threads)))
    assert found == [["gate_golden.jpg", "golden_gate-bridgeAtNight.jpg"]] * threads


def test_a_deleted_keyword_cache_is_made_again_by_the_next_search(
    photos: Path, tmp_path: Path
) -> None:
    """A damaged cache's error says to delete it; an open index (a server) then made no new
    one ("no such table") until restarted."""
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx:
        idx.add([photos])
        first = _names(idx.search("golden gate", k=3, mode="keyword"))
        cache = next((tmp_path / "db").rglob("keywords.sqlite"))
        for leftover in cache.parent.glob("keywords.sqlite*"):
            leftover.unlink()
        assert _names(idx.search("golden gate", k=3, mode="keyword")) == first


def test_while_this_process_writes_words_are_refreshed_at_a_pace_and_after_at_once(
    photos: Path, store: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """During an indexing job of this process, the keyword index is brought in step at most
    once per REFRESH_GAP (searches keep the CPU); once the job is over, the next search
    sees every word."""
    from clipsearch.storage import keyword_index

    monkeypatch.setattr(keyword_index, "REFRESH_GAP", 3600.0)
    with clipsearch.open(store(), model="tiny-random", workers=0) as idx:
        idx.add([photos / "misc"])
        assert idx.search("lighthouse", k=3, mode="keyword") == []
        make_image(60).save(photos / "Paris trip" / "lighthouse.jpg")
        with idx.writing():  # a job of this process is writing
            idx.add([photos / "Paris trip"])
            assert "lighthouse.jpg" in _names(idx.search("lighthouse", k=100, mode="semantic"))
            # the keyword index was refreshed moments ago: not again until the gap is over
            assert idx.search("lighthouse", k=3, mode="keyword") == []
        assert _names(idx.search("lighthouse", k=3, mode="keyword")) == ["lighthouse.jpg"]


def test_a_keyword_cache_deleted_under_other_threads_is_made_again_for_them(
    photos: Path, tmp_path: Path
) -> None:
    """Each thread keeps its own connection to the keyword cache: one that still points at
    a deleted file must not go on answering from it (a new file often gets the old one's
    inode number)."""
    with (
        clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx,
        ThreadPoolExecutor(1) as worker,
    ):
        idx.add([photos])
        first = worker.submit(idx.search, "golden gate", k=3, mode="keyword").result()
        cache = next((tmp_path / "db").rglob("keywords.sqlite"))
        for leftover in cache.parent.glob("keywords.sqlite*"):
            leftover.unlink()
        assert _names(idx.search("golden gate", k=3, mode="keyword")) == _names(first)
        make_image(61).save(photos / "misc" / "golden_harbour.jpg")
        idx.add([photos])
        again = worker.submit(idx.search, "golden", k=5, mode="keyword").result()
        assert "golden_harbour.jpg" in _names(again)


def test_while_this_process_writes_only_new_photos_words_are_added(
    photos: Path, store: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a job of this process writes, a refresh adds the new images' words and reads
    no other image's (a moved photo keeps its old words until the job is over); then the
    whole refresh brings every word in step."""
    from clipsearch.storage import keyword_index

    monkeypatch.setattr(keyword_index, "REFRESH_GAP", 0.0)
    monkeypatch.setattr(keyword_index, "REFRESH_SHARE", 0.0)
    with clipsearch.open(store(), model="tiny-random", workers=0) as idx:
        idx.add([photos])
        assert idx.search("lighthouse", k=3, mode="keyword") == []  # in step
        make_image(60).save(photos / "Paris trip" / "lighthouse.jpg")
        (photos / "misc" / "gate_golden.jpg").rename(photos / "misc" / "zeppelin.jpg")
        with idx.writing():
            summary = idx.add([photos])
            assert (summary.added, summary.moved) == (1, 1)
            assert _names(idx.search("lighthouse", k=3, mode="keyword")) == ["lighthouse.jpg"]
            assert idx.search("zeppelin", k=3, mode="keyword") == []  # not read again yet
        assert _names(idx.search("zeppelin", k=3, mode="keyword")) == ["zeppelin.jpg"]
        assert _names(idx.search("lighthouse", k=3, mode="keyword")) == ["lighthouse.jpg"]


def test_postgresql_tidies_a_keyword_table_it_filled(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """A keyword table filled in one refresh is tidied at once: its GIN index's pending list
    (rows every search reads one by one) is moved into the index and the table analysed.
    Before, a server on a new 100,000-photo index spent 60 ms on each keyword query (40
    searches/s instead of 100-120) until autovacuum came round. A refresh that changes
    little leaves that to autovacuum."""
    where = postgres.create()
    write_images(tmp_path / "photos", 70)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(postgres.drop, where)
        idx = cleanup.enter_context(clipsearch.open(where, model="tiny-random", workers=0))
        idx.add([tmp_path / "photos"])
        idx.search("img", k=3, mode="keyword")

        def read(sql: str) -> float:
            with idx.db.engine.begin() as conn:
                return float(conn.exec_driver_sql(sql).scalar_one())

        estimate = "SELECT reltuples FROM pg_class WHERE relname = 'clipsearch_keywords'"
        pending = "SELECT gin_clean_pending_list('clipsearch_keywords_doc'::regclass)"
        assert read(estimate) == 70  # never analysed reads -1
        assert read(pending) == 0  # pages it found pending (and moved)
        write_images(tmp_path / "photos", 1, start=70)
        idx.add([tmp_path / "photos"])
        idx.search("img", k=3, mode="keyword")
        assert read(estimate) == 70  # one new row: autovacuum's business
        assert read(pending) == 1

        # A role that may write the tables but does not own them is refused the clean-up:
        # the refresh goes on without it (it once failed every search from then on).
        role = f"clipsearch_writer_{uuid.uuid4().hex[:8]}"
        with postgres.admin().connect() as admin:
            admin.exec_driver_sql(f'CREATE ROLE "{role}"')
        cleanup.callback(_drop_role, postgres, role, where, idx)
        with idx.db.engine.begin() as conn:
            for grant in ("TABLES", "SEQUENCES"):
                conn.exec_driver_sql(f'GRANT ALL ON ALL {grant} IN SCHEMA public TO "{role}"')

        @event.listens_for(idx.db.engine, "connect")
        def as_writer(dbapi: Any, _record: Any) -> None:
            with dbapi.cursor() as cursor:
                cursor.execute(f'SET ROLE "{role}"')
            dbapi.commit()  # else the pool's reset rolls the SET back

        idx.db.engine.dispose()  # new connections, as the writer
        write_images(tmp_path / "photos", 100, start=100)  # enough to be tidied
        idx.add([tmp_path / "photos"])
        with idx.db.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT current_user").scalar_one() == role
        found = idx.search("img_0105", k=5, mode="keyword")  # one of the new photos
        assert [Path(h.path).name for h in found] == ["img_0105.jpg"]


def _drop_role(postgres: PostgresServer, role: str, where: str, idx: clipsearch.Index) -> None:
    """After the database that holds the role's grants is gone."""
    idx.close()
    postgres.drop(where)
    with postgres.admin().connect() as admin:
        admin.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
