"""Text in photos: the pre-check on rendered signs and plain pictures, then `index --ocr`
with the real Tesseract: a word on a sign finds the photo by keyword, and a changed photo is
read again.

Without Tesseract (or pytesseract) these tests skip, except under CI (CI=true), where they
fail: `.ci/run` installs Debian's tesseract-ocr."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

import clipsearch
from clipsearch.indexer.ocr import text_layout
from tests.conftest import make_image, write_images


def _missing() -> str | None:
    try:
        import pytesseract  # noqa: F401
    except ImportError:
        return "pytesseract is not installed (pip install 'clipsearch[ocr]')"
    if shutil.which("tesseract") is None:
        return "the tesseract program is not installed (apt install tesseract-ocr)"
    return None


@pytest.fixture
def tesseract() -> None:
    missing = _missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"OCR tests cannot run in CI: {missing}")
        pytest.skip(missing)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "LiberationSans-Regular.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def sign(path: Path, words: str, size: int = 40, angle: float = 0.0, dark: bool = False) -> None:
    """A photo-like picture with a sign on it: `words` on a plate, turned by `angle`."""
    picture = make_image(3, (640, 480))
    plate = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(plate)
    font = _font(size)
    box = draw.textbbox((0, 0), words, font=font)
    x, y = (640 - (box[2] - box[0])) // 2, (480 - (box[3] - box[1])) // 2
    back, ink = ((30, 50, 110, 255), (250, 250, 250, 255))
    if not dark:
        back, ink = (245, 240, 225, 255), (20, 20, 20, 255)
    draw.rectangle((x - 16, y - 16, x + box[2] - box[0] + 16, y + box[3] - box[1] + 16), fill=back)
    draw.text((x, y - box[1]), words, font=font, fill=ink)
    plate = plate.rotate(angle, resample=Image.Resampling.BICUBIC, center=(320, 240))
    picture.paste(plate, (0, 0), plate)
    picture.save(path, quality=92)


def test_the_precheck_sees_lines_of_text_and_their_slant(tmp_path: Path) -> None:
    for angle in (0.0, 8.0, -8.0):
        sign(tmp_path / "sign.jpg", "FRESH BREAD DAILY", size=36, angle=angle)
        layout = text_layout(Image.open(tmp_path / "sign.jpg"))
        assert layout is not None, angle
        assert 15 <= layout.height <= 45 and abs(layout.angle - angle) < 3, layout
    plain = write_images(tmp_path / "plain", 8)
    seen = sum(text_layout(Image.open(p)) is not None for p in plain)
    assert seen <= 2, f"the pre-check saw text in {seen} of 8 pictures of shapes"


@pytest.mark.usefixtures("tesseract")
def test_index_ocr_finds_a_photo_by_the_words_on_it(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    write_images(photos, 4)
    sign(photos / "shop.jpg", "BAKERY OPEN")
    sign(photos / "street.jpg", "PARKING GARAGE", angle=6, dark=True)
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx:
        summary = idx.add([photos], ocr=True)
        read = summary.text_in_photos
        assert read is not None and read["with_text"] == 2, read
        assert read["read"] + read["prechecked_out"] == 6
        for word, name in (("bakery", "shop.jpg"), ("garage", "street.jpg")):
            hits = idx.search(word, k=3, mode="keyword")
            assert [Path(h.path).name for h in hits] == [name], word
        assert Path(idx.search("bakery", k=3)[0].path).name == "shop.jpg"  # hybrid, too
        texts = {Path(i.path).name: i.text_in_photo for i in idx.items(list(range(1, 7)))}
        assert "BAKERY" in (texts["shop.jpg"] or "") and texts["img_0000.jpg"] == ""

        # A changed photo is read again; an unchanged one is not.
        sign(photos / "shop.jpg", "FLOWER MARKET")
        again = idx.add([photos], ocr=True).text_in_photos
        assert again is not None and again["read"] + again["prechecked_out"] == 1
        assert idx.search("bakery", k=3, mode="keyword") == []
        assert [Path(h.path).name for h in idx.search("flower", k=3, mode="keyword")] == [
            "shop.jpg"
        ]


def test_cli_ocr_and_a_clear_error_without_tesseract(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    write_images(photos, 2)
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no tesseract on it
    run = subprocess.run(
        [sys.executable, "-m", "clipsearch.cli", "index", str(photos), "--db",
         str(tmp_path / "db"), "--model", "tiny-random", "--ocr", "--quiet"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert run.returncode != 0
    assert "tesseract" in run.stderr and (
        "apt install" in run.stderr or "pip install" in run.stderr
    )
    assert not (tmp_path / "db").exists()  # nothing was done
    if _missing() is None:
        sign(photos / "menu.jpg", "PIZZA PASTA")
        done = subprocess.run(
            [sys.executable, "-m", "clipsearch.cli", "index", str(photos), "--db",
             str(tmp_path / "db"), "--model", "tiny-random", "--ocr", "--quiet", "--json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert json.loads(done.stdout)["text_in_photos"]["with_text"] == 1
