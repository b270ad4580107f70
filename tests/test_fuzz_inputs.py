"""Property-based fuzzing (hypothesis) of everything that parses what a user hands over:
file names, the captions CSV / JSONL / vocabulary / sidecar readers, and the query and filter
parsers. Whatever the input, the answer is a result or one of clipsearch's own errors,
never another exception, and what is stored is valid text."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import clipsearch
from clipsearch.errors import ClipsearchError, TextSourceError
from clipsearch.indexer import text_sources as ts
from clipsearch.models import Encoder
from clipsearch.names import is_text, readable
from clipsearch.search.filters import Filter
from clipsearch.search.query import Query
from tests.conftest import make_image

#: CI replays the same examples every run; local runs draw new ones.
FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=os.environ.get("CI") == "true",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SLOW_FUZZ = settings(FUZZ, max_examples=12)

# Text that stresses parsers: separators, quotes, NULs, surrogate escapes, huge numbers.
tricky_text = st.text(
    alphabet=st.one_of(
        st.sampled_from([*',"\n\r\t#\0\\{}[]:*?/.- ', "\x85", "\u2028", "é", "😀"]),
        st.characters(codec="utf-8"),
    ),
    max_size=80,
)
tricky_bytes = st.one_of(
    st.binary(max_size=200),
    tricky_text.map(lambda t: t.encode("utf-8")),
    st.builds(lambda a, b: a + b, tricky_text.map(str.encode), st.binary(max_size=20)),
)


def _entries_are_text(entries: list[ts.TextEntry]) -> None:
    for entry in entries:
        assert entry.text.strip() and is_text(entry.text)
        assert entry.key is None or is_text(entry.key)
        assert entry.image_path is None or (
            is_text(entry.image_path) and entry.image_path[0] == "/"
        )


@FUZZ
@given(data=tricky_bytes, kind=st.sampled_from(ts.KINDS))
def test_text_files_parse_or_fail_cleanly(data: bytes, kind: str) -> None:
    try:
        entries = ts.read_entries(Path("/tmp/fuzzed.file"), kind, data)
    except TextSourceError:
        return
    _entries_are_text(entries)


@FUZZ
@given(rows=st.lists(st.tuples(tricky_text, tricky_text), min_size=1, max_size=6))
def test_captions_csv_rows(rows: list[tuple[str, str]]) -> None:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["image", "caption"])
    writer.writerows(rows)
    try:
        entries = ts.read_entries(Path("/tmp/c.csv"), ts.CAPTIONS, out.getvalue().encode())
    except TextSourceError:
        return
    _entries_are_text(entries)


@FUZZ
@given(
    records=st.lists(
        st.dictionaries(
            st.sampled_from(["id", "text", "image", "extra"]),
            st.one_of(tricky_text, st.integers(), st.none(), st.lists(st.integers(), max_size=2)),
        ),
        max_size=5,
    ),
    escape=st.booleans(),
)
def test_jsonl_records(records: list[dict[str, object]], escape: bool) -> None:
    import json

    lines = [json.dumps(r, ensure_ascii=escape) for r in records]
    if escape and records:
        lines.append('{"text": "lone \\ud800 surrogate"}')  # valid JSON, not valid text
    try:
        entries = ts.read_entries(Path("/tmp/r.jsonl"), ts.JSONL, "\n".join(lines).encode())
    except TextSourceError:
        return
    _entries_are_text(entries)
    for entry in entries:
        json.dumps(dict(entry.metadata))  # what is stored as metadata_json


@FUZZ
@given(
    title=tricky_text,
    keywords=st.lists(tricky_text, max_size=3),
    raw=tricky_bytes,
    use_raw=st.booleans(),
)
def test_xmp_and_txt_sidecars(title: str, keywords: list[str], raw: bytes, use_raw: bool) -> None:
    from xml.sax.saxutils import escape

    items = "".join(f"<rdf:li>{escape(k)}</rdf:li>" for k in keywords)
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/"><rdf:Description>'
        f"<dc:title><rdf:Alt><rdf:li>{escape(title)}</rdf:li></rdf:Alt></dc:title>"
        f"<dc:subject><rdf:Bag>{items}</rdf:Bag></dc:subject>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    ).encode()
    for suffix in (".xmp", ".txt"):
        try:
            content = ts.read_sidecar(Path(f"/p/a{suffix}"), "/p/a.jpg", raw if use_raw else xmp)
        except TextSourceError:
            continue
        _entries_are_text(content.texts)
        assert all(k.strip() and is_text(k) for k in content.keywords)


@FUZZ
@given(
    text=st.one_of(st.none(), tricky_text, st.binary(max_size=20).map(os.fsdecode)),
    not_text=st.lists(st.one_of(tricky_text, st.binary(max_size=8).map(os.fsdecode)), max_size=2),
    weight=st.floats(allow_nan=True, allow_infinity=True),
    not_weight=st.floats(allow_nan=True, allow_infinity=True),
)
def test_query_parser(
    text: str | None, not_text: list[str], weight: float, not_weight: float
) -> None:
    try:
        query = Query.of(
            text=text, image="/tmp/x.jpg", image_weight=weight, not_text=not_text,
            negative_weight=not_weight,
        )  # fmt: skip
    except ClipsearchError:
        return
    for part in query.parts:
        assert part.weight > 0 and np.isfinite(part.weight)
        if part.kind == "text":
            assert is_text(str(part.value)) and str(part.value).strip()


@pytest.fixture(scope="module")
def small_index() -> Iterator[clipsearch.Index]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for i in range(5):
            make_image(i).save(folder / f"{i}.jpg")
        with clipsearch.open(Path(tmp) / "db", model="tiny-random", workers=0) as idx:
            idx.add([folder])
            yield idx


@FUZZ
@given(
    folder=st.one_of(st.none(), tricky_text, st.binary(max_size=12).map(os.fsdecode)),
    glob=st.one_of(st.none(), tricky_text),
    after=st.one_of(st.none(), tricky_text, st.dates().map(str)),
    width=st.one_of(st.none(), st.integers(min_value=-(2**70), max_value=2**70)),
    orientation=st.one_of(st.none(), st.sampled_from(["landscape", "square", "sideways", ""])),
    formats=st.lists(tricky_text, max_size=2),
    tags=st.lists(tricky_text, max_size=2),
)
def test_filter_parser_against_a_real_index(
    small_index: clipsearch.Index,
    folder: str | None,
    glob: str | None,
    after: str | None,
    width: int | None,
    orientation: str | None,
    formats: list[str],
    tags: list[str],
) -> None:
    try:
        filters = Filter(
            folder=folder, path_glob=glob, taken_after=after, min_width=width,
            orientation=orientation,  # type: ignore[arg-type]  # fuzzed on purpose
            formats=tuple(formats), tags=tuple(tags),
        )  # fmt: skip
        hits = small_index.search_vectors(small_index.image_vectors([1]), k=3, filters=filters)[0]
    except ClipsearchError:
        return
    assert len(hits) <= 3


name_parts = st.one_of(
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters="/\0"), min_size=1, max_size=40
    ),
    st.binary(min_size=1, max_size=30).filter(lambda b: b"/" not in b and b"\0" not in b),
)


@contextlib.contextmanager
def _folder_with(names: list[bytes]) -> Iterator[tuple[Path, list[bytes]]]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        made = []
        for i, name in enumerate(dict.fromkeys(names)):
            if name in (b".", b"..") or len(name) > 200:
                continue
            path = os.fsencode(folder) + b"/" + name + b".jpg"
            make_image(i).save(path, "JPEG")
            made.append(path)
        yield Path(tmp), made


@SLOW_FUZZ
@given(names=st.lists(name_parts.map(lambda n: os.fsencode(n) if isinstance(n, str) else n),
                      min_size=1, max_size=4))  # fmt: skip
def test_any_file_name_is_indexed_or_skipped_with_a_reason(
    names: list[bytes], tiny_encoder: Encoder
) -> None:
    with _folder_with(names) as (root, made):
        with clipsearch.open(root / "db", encoder=tiny_encoder, workers=0) as idx:
            first = idx.add([root / "photos"])
            again = idx.add([root / "photos"])
            stored = {os.fsencode(r.path) for r in idx.db.rows()}
        hidden = {p for p in made if os.path.basename(p).startswith(b".")}
        visible = [p for p in made if p not in hidden]
        skipped = [s.path for s in first.skipped]
        assert len(stored) + len(skipped) == len(visible)
        assert all(is_text(s) and readable(s) == s for s in skipped)
        assert again.added == again.updated == again.removed == 0
        assert again.unchanged == len(stored)


def test_found_by_fuzzing_a_lone_surrogate_in_jsonl_is_a_bad_line() -> None:
    data = b'{"text": "fine"}\n{"text": "lone \\ud800 surrogate"}\n'
    with pytest.raises(TextSourceError, match=r"line\(s\) 2;"):
        ts.read_entries(Path("/tmp/r.jsonl"), ts.JSONL, data)


def test_found_by_fuzzing_a_filter_without_conditions(small_index: clipsearch.Index) -> None:
    hits = small_index.search_vectors(
        small_index.image_vectors([1]), k=3, filters=Filter(folder="")
    )[0]
    assert len(hits) == 3


def test_found_by_fuzzing_a_size_filter_past_sqlites_integers() -> None:
    with pytest.raises(ClipsearchError, match="min_width must be between"):
        Filter(min_width=2**70)
