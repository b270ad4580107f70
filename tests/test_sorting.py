"""`--sort date`: the hits a search keeps, newest first, undated ones after; each hit carries
the date its photo was taken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

import clipsearch
from clipsearch.cli import app
from clipsearch.errors import QueryError
from tests.conftest import make_image
from tests.serving import LocalClient

runner = CliRunner()
DATES = ["2019:05:01 10:00:00", "2023:01:02 08:00:00", None, "2021:07:14 09:30:00", None]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("dated")
    for n, taken in enumerate(DATES):
        exif = Image.Exif()
        if taken:
            exif.get_ifd(0x8769)[36867] = taken
        make_image(n).save(root / f"photo_{n}.jpg", exif=exif)
    with clipsearch.open(root / "db", model="tiny-random", workers=0) as idx:
        idx.add([root])
    return str(root / "db")


def test_date_order_newest_first_undated_last(db: str) -> None:
    with clipsearch.open(db, create=False) as idx:
        by_relevance = idx.search("a photo", k=5)
        by_date = idx.search("a photo", k=5, sort="date")
        assert {h.id for h in by_date} == {h.id for h in by_relevance}
        assert [h.taken_at for h in by_date][:3] == [
            "2023-01-02T08:00:00", "2021-07-14T09:30:00", "2019-05-01T10:00:00",
        ]  # fmt: skip
        undated = [h.id for h in by_relevance if h.taken_at is None]
        assert [h.id for h in by_date][3:] == undated  # in relevance order
        with pytest.raises(QueryError, match="sort must be one of"):
            idx.search("a photo", sort="size")


def test_cli_and_http_sort_by_date(db: str) -> None:
    out = runner.invoke(app, ["search", "a photo", "--db", db, "--sort", "date", "--json"])
    assert out.exit_code == 0, out.output
    dates = [h.get("taken_at") for h in json.loads(out.stdout)]
    assert dates[0] == "2023-01-02T08:00:00" and dates[-1] is None
    from clipsearch.server import ServerSettings, create_app

    with LocalClient(create_app(ServerSettings(db=db, workers=0))) as client:
        body = client.get("/api/search", params={"q": "a photo", "sort": "date"}).json()
        assert Path(body["hits"][0]["path"]).name == "photo_1.jpg"
        assert client.get("/api/search", params={"q": "x", "sort": "size"}).status_code == 400
