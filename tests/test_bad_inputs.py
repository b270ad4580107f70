"""Bad files are skipped with a reason and the rest is indexed; every format is read."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import clipsearch
from clipsearch.errors import IndexNotFoundError
from clipsearch.indexer.scan import heif_available
from tests.conftest import CountingEncoder, make_image, write_images


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge canvas: a decompression bomb's calling card."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def _reasons(summary: clipsearch.IndexSummary) -> dict[str, str]:
    return {Path(s.path).name: s.reason for s in summary.skipped}


def test_each_kind_of_bad_file_is_skipped_with_its_reason(
    tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    photos = tmp_path / "photos"
    good = write_images(photos, 5)
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "notes.png").write_text("this is not an image")
    full = (photos / "img_0000.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (photos / "bomb.png").write_bytes(_png_claiming(50_000, 50_000))
    (photos / "dangling.jpg").symlink_to(tmp_path / "does-not-exist.jpg")
    (photos / "readme.txt").write_text("not an image extension: ignored, not skipped")

    with clipsearch.open(tmp_path / "db", encoder=counting_encoder, workers=0) as idx:
        summary = idx.add([photos])
        indexed = {Path(r.path).name for r in idx.db.rows()}

    reasons = _reasons(summary)
    assert set(reasons) == {"empty.jpg", "notes.png", "truncated.jpg", "bomb.png", "dangling.jpg"}
    assert "empty file" in reasons["empty.jpg"]
    assert "not an image" in reasons["notes.png"]
    assert "truncated" in reasons["truncated.jpg"]
    assert "too large" in reasons["bomb.png"] and "--max-pixels" in reasons["bomb.png"]
    assert "unreadable" in reasons["dangling.jpg"]
    assert indexed == {p.name for p in good}
    assert summary.added == 5


def test_max_pixels_limit_is_configurable(
    tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    write_images(tmp_path / "photos", 2)  # 160 x 120 = 19,200 pixels
    with clipsearch.open(
        tmp_path / "db", encoder=counting_encoder, workers=0, max_pixels=10_000
    ) as idx:
        summary = idx.add([tmp_path / "photos"])
    assert summary.added == 0 and len(summary.skipped) == 2
    assert all("too large" in s.reason for s in summary.skipped)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a chmod-000 file")
def test_permission_denied_is_skipped(tmp_path: Path, counting_encoder: CountingEncoder) -> None:
    paths = write_images(tmp_path / "photos", 2)
    paths[0].chmod(0)
    with clipsearch.open(tmp_path / "db", encoder=counting_encoder, workers=0) as idx:
        summary = idx.add([tmp_path / "photos"])
    assert summary.added == 1 and "unreadable" in summary.skipped[0].reason


def test_all_supported_formats_are_indexed(
    tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, ext in enumerate(["jpg", "jpeg", "png", "webp", "bmp", "tiff", "tif"]):
        make_image(i).save(photos / f"pic.{ext}")
    frames = [make_image(10), make_image(11)]
    frames[0].save(photos / "anim.gif", save_all=True, append_images=frames[1:])
    make_image(12).convert("RGBA").save(photos / "alpha.png")
    make_image(13).convert("L").save(photos / "grey.png")
    make_image(14).convert("CMYK").save(photos / "cmyk.jpg")
    make_image(15).convert("P").save(photos / "palette.png")
    with clipsearch.open(tmp_path / "db", encoder=counting_encoder, workers=0) as idx:
        summary = idx.add([photos])
        formats = {Path(r.path).name: r.format for r in idx.db.rows()}
    assert summary.skipped == []
    assert summary.added == 12
    assert formats["anim.gif"] == "GIF" and formats["pic.webp"] == "WEBP"


def test_gif_uses_its_first_frame(tmp_path: Path, tiny_encoder: object) -> None:
    first, second = make_image(20), make_image(21)
    first.save(tmp_path / "anim.gif", save_all=True, append_images=[second])
    first.convert("P").save(tmp_path / "first.gif")
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx:
        idx.add([tmp_path])
        v = {Path(r.path).name: np.frombuffer(r.vector, np.float32) for r in idx.db.rows()}
    assert float(v["anim.gif"] @ v["first.gif"]) > 0.999


def test_exif_orientation_and_date_are_applied(tmp_path: Path) -> None:
    upright = make_image(30, size=(120, 160))
    upright.save(tmp_path / "upright.jpg", quality=95)
    # Stored sideways, with EXIF saying "rotate 90° clockwise to display" (orientation 6).
    exif = Image.Exif()
    exif[274] = 6
    exif.get_ifd(0x8769)[36867] = "2021:07:14 09:30:00"
    upright.transpose(Image.Transpose.ROTATE_90).save(
        tmp_path / "sideways.jpg", quality=95, exif=exif.tobytes()
    )
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx:
        idx.add([tmp_path])
        rows = {Path(r.path).name: r for r in idx.db.rows()}
    side, up = rows["sideways.jpg"], rows["upright.jpg"]
    assert (side.width, side.height) == (120, 160)
    assert side.taken_at == "2021-07-14T09:30:00" and up.taken_at is None
    cos = float(np.frombuffer(side.vector, np.float32) @ np.frombuffer(up.vector, np.float32))
    assert cos > 0.995


@pytest.mark.skipif(not heif_available(), reason="pillow-heif not installed")
def test_heic_is_indexed_when_the_plugin_is_there(tmp_path: Path) -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()
    try:
        make_image(40).save(tmp_path / "phone.heic")
    except (OSError, KeyError, ValueError) as exc:  # a libheif build without an encoder
        pytest.skip(f"this pillow-heif cannot write HEIC: {exc}")
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx:
        summary = idx.add([tmp_path])
    assert summary.added == 1 and summary.skipped == []


def test_heic_without_the_plugin_is_skipped_with_a_hint(
    tmp_path: Path, counting_encoder: CountingEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipsearch.indexer import scan

    monkeypatch.setattr(scan, "heif_available", lambda: False)
    (tmp_path / "phone.heic").write_bytes(b"\0" * 100)
    with clipsearch.open(tmp_path / "db", encoder=counting_encoder, workers=0) as idx:
        summary = idx.add([tmp_path])
    assert "pillow-heif" in summary.skipped[0].reason


def test_a_wrong_path_is_an_error_and_changes_nothing(
    tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    write_images(tmp_path / "photos", 3)
    with clipsearch.open(tmp_path / "db", encoder=counting_encoder, workers=0) as idx:
        idx.add([tmp_path / "photos"])
        with pytest.raises(IndexNotFoundError, match="no such file or folder"):
            idx.add([tmp_path / "photos", tmp_path / "typo"])
        assert idx.db.count() == 3


def test_decoding_in_worker_processes_gives_the_same_vectors(
    tmp_path: Path, tiny_encoder: object
) -> None:
    write_images(tmp_path / "photos", 24)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    results = {}
    for workers in (0, 2):
        with clipsearch.open(
            tmp_path / f"db{workers}", model="tiny-random", workers=workers, batch_size=4
        ) as idx:
            summary = idx.add([tmp_path / "photos"])
            assert summary.added == 24 and len(summary.skipped) == 1
            results[workers] = {r.path: np.frombuffer(r.vector, np.float32) for r in idx.db.rows()}
    assert results[0].keys() == results[2].keys()
    for path, vector in results[0].items():
        np.testing.assert_allclose(vector, results[2][path], atol=1e-5)
