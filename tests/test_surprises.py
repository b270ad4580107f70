"""What used to be silently ignored or silently wrong now says so: image-only flags with
--texts, --kind without --texts, captions naming images elsewhere, and the rule for keeping
an adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipsearch.adapters.fit import FitReport
from clipsearch.cli import app
from tests.conftest import write_images

runner = CliRunner()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("surprises")
    write_images(root / "photos" / "images", 4)
    lines = ["image,caption"] + [f"img_{i:04d}.jpg,a photo numbered {i}" for i in range(4)]
    (root / "photos" / "captions.csv").write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["index", str(root / "photos"), "--db", str(root / "db"),
                                 "--model", "tiny-random", "-q", "--workers", "0"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return root / "db"


@pytest.mark.parametrize(
    "flags",
    [["--folder", "/x"], ["--glob", "*"], ["--diverse", "0.3"], ["--collapse", "0.9"],
     ["--ensemble", "/elsewhere"], ["--explain"], ["--tag", "dog", "--type", "png"]],
)  # fmt: skip
def test_image_only_flags_with_texts_are_an_error(db: Path, flags: list[str]) -> None:
    result = runner.invoke(app, ["search", "dog", "--texts", "--db", str(db), *flags])
    assert result.exit_code == 2
    assert flags[0] in result.stderr and "--texts" in result.stderr


def test_kind_without_texts_is_an_error(db: Path) -> None:
    result = runner.invoke(app, ["search", "dog", "--kind", "captions", "--db", str(db)])
    assert result.exit_code == 2 and "add --texts" in result.stderr


def test_captions_naming_images_elsewhere_warn_and_images_fixes_it(db: Path) -> None:
    csv = db.parent / "photos" / "captions.csv"
    result = runner.invoke(app, ["texts", "add", str(csv), "--db", str(db), "--json"])
    assert result.exit_code == 0
    assert "4 of 4 texts" in result.stderr and "--images" in result.stderr
    assert json.loads(result.stdout)[0]["missing_images"] == 4

    images = db.parent / "photos" / "images"
    result = runner.invoke(
        app, ["texts", "add", str(csv), "--db", str(db), "--images", str(images), "--json"]
    )
    assert result.exit_code == 0 and "warning" not in result.stderr
    summary = json.loads(result.stdout)[0]
    assert summary["missing_images"] == 0 and not summary["unchanged"]
    hits = runner.invoke(app, ["search", "a photo numbered 2", "--texts", "--db", str(db),
                               "--json"])  # fmt: skip
    assert {Path(h["image_path"]).parent for h in json.loads(hits.stdout)} == {images}


def _report(before: dict[str, float], after: dict[str, float]) -> FitReport:
    return FitReport(10, 50, 3, 15, before, after, 20, 12, 1.0)


def test_an_adapter_that_trades_the_first_hits_for_recall_at_10_is_not_kept() -> None:
    keys = [f"{d}_R@{k}" for d in ("text_to_image", "image_to_text") for k in (1, 5, 10)]
    before = dict.fromkeys(keys, 0.3)
    assert _report(before, {**before, "text_to_image_R@10": 0.4}).improved
    traded = {**before, "text_to_image_R@1": 0.25, "text_to_image_R@10": 0.6}
    assert not _report(before, traded).improved  # the six recalls sum higher, R@1 fell
    worse_r5 = {**before, "text_to_image_R@5": 0.29, "image_to_text_R@1": 0.5}
    assert not _report(before, worse_r5).improved
