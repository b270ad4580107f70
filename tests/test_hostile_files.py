"""Files and folders that used to stop a run or cost gigabytes: names that are not UTF-8,
extreme strips, files broken after indexing, a read-only folder, a full disk."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

import clipsearch
from clipsearch.cli import app
from tests.conftest import CountingEncoder, make_image, write_images

runner = CliRunner()


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _index_args(photos: Path, db: Path | str, *extra: str) -> list[str]:
    return ["index", str(photos), "--db", str(db), "--model", "tiny-random", "-q",
            "--workers", "0", *extra]  # fmt: skip


def test_names_that_are_not_utf8_are_skipped_and_the_rest_indexed(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    write_images(photos, 3)
    make_image(50).save(os.fsencode(photos) + b"/caf\xe9.jpg", "JPEG")
    os.mkdir(os.fsencode(photos) + b"/d\xff")
    make_image(51).save(os.fsencode(photos) + b"/d\xff/x.jpg", "JPEG")
    make_image(52).save(photos / "two\nlines.jpg")
    db = tmp_path / "db"
    for _run_twice in range(2):
        code, out, err = _run(*_index_args(photos, db, "--json"))
        assert code == 0, err
        summary = json.loads(out)
        skipped = {s["path"]: s["reason"] for s in summary["skipped"]}
        assert set(skipped) == {f"{photos}/caf\\xe9.jpg", f"{photos}/d\\xff/x.jpg"}
        assert all("not valid UTF-8" in reason for reason in skipped.values())
    with clipsearch.open(db, create=False) as idx:
        assert idx.db.count() == 4
    code, out, _ = _run("search", "lines", "--db", str(db), "-k", "10")
    assert code == 0 and len(out.splitlines()) == 5  # header + 4 hits, one line each
    assert f"{photos}/two\\nlines.jpg" in out


def test_a_name_that_is_not_utf8_on_the_command_line_is_skipped_and_the_rest_indexed(
    tmp_path: Path,
) -> None:
    """It used to stop the whole run before the other paths given were read."""
    photos, more = tmp_path / "photos", tmp_path / "more"
    write_images(photos, 2)
    write_images(more, 2, start=10)
    bad = os.fsencode(photos) + b"/caf\xe9.jpg"
    make_image(50).save(bad, "JPEG")
    db = tmp_path / "db"
    code, out, err = _run(*_index_args(more, db, "--json"), os.fsdecode(bad), str(photos))
    assert code == 0, err
    summary = json.loads(out)
    assert summary["added"] == 4
    assert [s["path"] for s in summary["skipped"]] == [f"{photos}/caf\\xe9.jpg"]


SPECIAL_FILES_RUN = 120  # seconds: the bar is a minute on the default runtime


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")
def test_pipes_and_devices_in_a_folder_are_skipped_without_blocking(tmp_path: Path) -> None:
    """A FIFO named pipe.jpg blocked the indexer in open() forever; a link to /dev/zero
    named zero.jpg grew to 11.7 GB. Now each is skipped with what it is, in a real CLI
    process on the default runtime."""
    photos = tmp_path / "photos"
    write_images(photos, 3)
    os.mkfifo(photos / "pipe.jpg")
    os.mkfifo(photos / "pipe.mp4")
    os.mkfifo(photos / "img_0000.txt")  # a sidecar beside a real photo
    os.symlink("/dev/zero", photos / "zero.jpg")
    os.symlink("/dev/urandom", photos / "random.png")
    named = tmp_path / "named.jpg"
    os.mkfifo(named)  # named on the command line itself
    done = subprocess.run(
        [sys.executable, "-m", "clipsearch.cli", "index", str(photos), str(named), "--db",
         str(tmp_path / "db"), "--model", "clipsearch-mini", "--json", "-q"],
        capture_output=True, text=True, timeout=SPECIAL_FILES_RUN,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["added"] == 3
    skipped = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    pipe, device = (
        "not a regular file but a named pipe (FIFO)",
        "not a regular file but a character device",
    )
    assert skipped == {"pipe.jpg": pipe, "pipe.mp4": pipe, "named.jpg": pipe,
                       "zero.jpg": device, "random.png": device}  # fmt: skip


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")
def test_the_readers_refuse_a_pipe_or_device_at_once(tmp_path: Path) -> None:
    """A file that turns into a pipe after the scan: each reader checks the opened
    descriptor (opened without blocking) and reads no more than its declared size."""
    from clipsearch.errors import ImageDecodeError, TextSourceError
    from clipsearch.indexer.decode import load_upright
    from clipsearch.indexer.text_sources import read_bytes
    from clipsearch.regular_files import NotRegularFile, read_regular, sha256_regular

    pipe = tmp_path / "pipe.jpg"
    os.mkfifo(pipe)
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 11)
    results: list[str] = []

    def attack() -> None:
        for path in (str(pipe), "/dev/zero", "/dev/urandom"):
            with pytest.raises(ImageDecodeError, match="not a regular file"):
                load_upright(path, 224)
            with pytest.raises(TextSourceError, match="not a regular file"):
                read_bytes(Path(path))
            with pytest.raises(NotRegularFile):
                sha256_regular(path)
        with pytest.raises(OSError, match="too large"):
            read_regular(big, limit=10)
        results.append("done")

    reader = threading.Thread(target=attack, daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert results == ["done"], "a reader blocked on a pipe or kept reading a device"


def test_a_binary_query_is_one_clear_error(tmp_path: Path) -> None:
    write_images(tmp_path / "photos", 2)
    assert _run(*_index_args(tmp_path / "photos", tmp_path / "db"))[0] == 0
    query = os.fsdecode(b"caf\xe9 \xff\xfe")
    code, out, err = _run("search", query, "--db", str(tmp_path / "db"))
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "not valid UTF-8" in err and "\\xe9" in err


STRIP_PEAK = """
import resource, sys
from torchvision import transforms
from clipsearch.indexer.decode import decode_image
preprocess = transforms.Compose(
    [transforms.Resize(224), transforms.CenterCrop(224), transforms.ToTensor()]
)
from clipsearch.errors import ImageDecodeError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decoded = decode_image(sys.argv[1], preprocess, 224)
    assert tuple(decoded.pixels.shape) == (3, 224, 224)
except ImageDecodeError as exc:
    assert "too large" in exc.reason, exc.reason
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.parametrize("size", [(100_000, 1), (1, 100_000), (60_000, 40)])
def test_extreme_strips_decode_in_bounded_memory(tmp_path: Path, size: tuple[int, int]) -> None:
    """A 370-byte 100000x1 PNG once cost 2.8 GB to index; the decoder's own peak growth,
    measured in a fresh process with a 224-pixel model input, now stays under 64 MB."""
    path = tmp_path / "strip.png"
    Image.new("RGB", size, (200, 40, 40)).save(path, optimize=True)
    assert path.stat().st_size < 20_000
    done = subprocess.run(
        [sys.executable, "-c", STRIP_PEAK, str(path)], capture_output=True, text=True, check=True
    )
    assert int(done.stdout) < 64, f"peak grew by {done.stdout.strip()} MB"


def test_bombs_are_refused_in_bounded_memory(tmp_path: Path) -> None:
    """A PNG claiming 30000x30000 (and one just under Pillow's own limit): refused before
    decoding, measured in a fresh process."""
    from tests.test_bad_inputs import _png_claiming

    for width, height in ((30_000, 30_000), (16_000, 10_000)):
        path = tmp_path / f"bomb-{width}.png"
        path.write_bytes(_png_claiming(width, height))
        done = subprocess.run(
            [sys.executable, "-c", STRIP_PEAK, str(path)], capture_output=True, text=True,
            check=True,
        )  # fmt: skip
        assert int(done.stdout) < 64, f"peak grew by {done.stdout.strip()} MB"


def test_extreme_strip_through_the_cli(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    write_images(photos, 2)
    Image.new("RGB", (100_000, 1), (10, 200, 10)).save(photos / "strip.png")
    code, out, _ = _run(*_index_args(photos, tmp_path / "db", "--json"))
    assert code == 0 and json.loads(out)["added"] == 3


def test_bomb_message_is_ours_not_pillows(tmp_path: Path) -> None:
    from tests.test_bad_inputs import _png_claiming

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "bomb.png").write_bytes(_png_claiming(30_000, 30_000))
    code, out, _ = _run(*_index_args(tmp_path / "photos", tmp_path / "db", "--json"))
    assert code == 0
    reason = json.loads(out)["skipped"][0]["reason"]
    assert reason == (
        "image too large: 900 MP exceeds the 150 MP limit (decompression-bomb guard); "
        "raise it with --max-pixels"
    )


def test_a_file_broken_after_indexing_loses_its_entry(
    tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    photos = write_images(tmp_path / "photos", 6)
    original = tmp_path / "original.jpg"
    shutil.copy(photos[2], original)
    with clipsearch.open(tmp_path / "db", encoder=counting_encoder, workers=0) as idx:
        idx.add([tmp_path / "photos"])
        with photos[2].open("r+b") as f:
            f.truncate(200)
        summary = idx.add([tmp_path / "photos"])
        assert summary.removed == 1
        assert [s.path for s in summary.skipped] == [str(photos[2])]
        assert "old entry is removed" in summary.skipped[0].reason
        hits = idx.search(image=original, k=10)
        assert str(photos[2]) not in {h.path for h in hits}
        assert len(hits) == 5
        # Repaired on disk: the next run indexes it again.
        shutil.copy(original, photos[2])
        assert idx.add([tmp_path / "photos"]).added == 1


def test_a_failed_first_run_leaves_no_index_folder(tmp_path: Path) -> None:
    write_images(tmp_path / "photos", 2)
    db = tmp_path / "new-index"
    code, _, err = _run("index", str(tmp_path / "missing"), "--db", str(db))
    assert code == 1 and "no such file or folder" in err
    code, _, err = _run("index", str(tmp_path / "photos"), "--db", str(db), "--model", "nope:x")
    assert code == 1 and err.startswith("error: ")
    assert not db.exists()


# -- a filesystem of our own: read-only, full -----------------------------------------------


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_read_only_index_folder_can_be_searched(tmp_path: Path) -> None:
    write_images(tmp_path / "photos", 6)
    with _tmpfs(tmp_path / "ro", "20m") as fs:
        db = fs / "db"
        assert _run(*_index_args(tmp_path / "photos", db))[0] == 0
        code, expected, _ = _run("search", "a red square", "--db", str(db), "--json")
        assert code == 0
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)

        code, out, err = _run("search", "a red square", "--db", str(db), "--json")
        assert code == 0, err
        assert json.loads(out) == json.loads(expected)
        code, out, err = _run("search", "a new query", "--db", str(db))
        assert code == 0, err
        code, out, _ = _run("verify", "--db", str(db))
        assert code == 0 and "is read-only: searches work" in out  # named, but no problem
        code, _, err = _run(*_index_args(tmp_path / "photos", db))
        assert code == 1 and err.count("\n") == 1 and "read-only" in err, err


def test_full_disk_is_one_line_and_loses_nothing(tmp_path: Path) -> None:
    write_images(tmp_path / "photos", 50)
    write_images(tmp_path / "more", 200, start=1000)
    with _tmpfs(tmp_path / "small", "8m") as fs:
        db = fs / "db"
        code, _, err = _run(*_index_args(tmp_path / "photos", db, "--batch-size", "8"))
        assert code == 0, err
        filler = _fill(fs / "filler")
        code, _, err = _run(*_index_args(tmp_path / "more", db, "--batch-size", "8"))
        assert code == 1 and err.count("\n") == 1 and "full" in err, err
        assert not [p.name for p in db.iterdir() if p.name.endswith(".tmp")]
        code, out, _ = _run("verify", "--db", str(db), "--no-files")
        assert code == 1 and "disk: " in out and "bytes free" in out

        filler.unlink()
        code, _, err = _run(*_index_args(tmp_path / "more", db, "--batch-size", "8"))
        assert code == 0, err
        assert _run("verify", "--db", str(db))[0] == 0
        with clipsearch.open(db, create=False) as idx:
            assert idx.db.count() == 250


def test_nul_in_sidecars_exif_and_text_sources_indexes_on_both_stores(
    tmp_path: Path, store: Callable[..., str]
) -> None:
    """PostgreSQL cannot hold NUL in text: a sidecar or EXIF field with one aborted
    `clipsearch index` there with a traceback, on every re-run. Now NUL is dropped (with a
    warning) on either store, and the rest of the text is kept."""
    photos = tmp_path / "photos"
    write_images(photos, 2)
    (photos / "img_0000.txt").write_text("a red\x00 bicycle")
    exif = Image.Exif()
    exif[271], exif[272] = "Fuji\x00film", "X-T30"
    make_image(9).save(photos / "exif.jpg", exif=exif)
    captions = tmp_path / "captions.csv"
    captions.write_text(f"image,caption\n{photos / 'img_0001.jpg'},a green\x00 tram\n")
    db = store()
    for _again in range(2):
        code, out, err = _run(*_index_args(photos, db, "--json"))
        assert code == 0, err
        assert json.loads(out)["skipped"] == []
    with clipsearch.open(db, create=False) as idx:
        assert idx.db.count() == 3
        idx.texts.add(captions)
        texts = {h.text for h in idx.search_texts("bicycle", k=5)}
        assert {"a red bicycle", "a green tram"} <= texts
        found = idx.search("bicycle", k=1, mode="keyword")
        assert [Path(h.path).name for h in found] == ["img_0000.jpg"]
        cameras = {Path(i.path).name: i.camera for i in idx.items(list(range(1, 4)))}
        assert all("\x00" not in (c or "") for c in cameras.values())


def test_every_command_on_a_full_disk_is_one_line(tmp_path: Path) -> None:
    """A full disk once printed a traceback from the default (hybrid) search, which makes
    its keyword cache on first use. Each command that may write on a full disk now either
    works or says so in one line, and the index stays whole: with the database closed, and
    with it held open by another reader (a server), when its WAL files already exist and
    searches that write nothing work."""
    photos = tmp_path / "photos"
    write_images(photos, 12)
    (photos / "img_0000.txt").write_text("a red bicycle on a wall")
    captions = tmp_path / "captions.csv"
    captions.write_text(f"image,caption\n{photos / 'img_0001.jpg'},a green tram\n")
    with _tmpfs(tmp_path / "small", "4m") as fs:
        db = str(fs / "db")
        assert _run(*_index_args(photos, db))[0] == 0
        commands = [
            ["search", "bicycle", "--db", db],
            ["search", "bicycle", "--db", db, "--mode", "keyword"],
            ["search", "bicycle", "--db", db, "--mode", "semantic"],
            ["search", "tram", "--db", db, "--texts"],
            ["texts", "add", str(captions), "--db", db],
            ["tag", str(photos / "img_0002.jpg"), "--db", db, "--store"],
            ["reindex", "--db", db],
            ["stats", "--db", db],
        ]
        for held_open in (False, True):
            reader = sqlite3.connect(Path(db) / "clipsearch.db") if held_open else None
            if reader is not None:
                reader.execute("SELECT count(*) FROM images").fetchone()
            filler = _fill(fs / "filler")
            codes = []
            for command in commands:
                code, _, err = _run(*command)
                codes.append(code)
                assert code in (0, 1), (command, err)
                assert "Traceback" not in err, (command, err)
                last = err.strip().splitlines()[-1] if err.strip() else ""
                assert code == 0 or (last.startswith("error: ") and "full" in last), (command, err)
            if held_open:  # reading needs no new file: the semantic search and stats work
                assert codes[2] == 0 and codes[7] == 0, codes
            filler.unlink()
            if reader is not None:
                reader.close()
            code, out, _ = _run("verify", "--db", db)
            assert code == 0, out
        assert _run("search", "bicycle", "--db", db, "--mode", "keyword")[0] == 0


def _fill(filler: Path) -> Path:
    with contextlib.suppress(OSError), filler.open("wb") as f:
        while True:  # fill every byte that is left
            f.write(b"\0" * 4096)
            f.flush()
    return filler


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")
def test_a_text_source_named_by_the_user_may_be_a_pipe(tmp_path: Path) -> None:
    """`clipsearch texts add <(cmd)` reads the pipe to its end (files found in folders are
    regular files only); a device that never ends stops at the limit."""
    from clipsearch.regular_files import read_named

    pipe = tmp_path / "captions.csv"
    os.mkfifo(pipe)
    text = "image,caption\n/x/a.jpg,a red bicycle\n" * 1000
    writer = threading.Thread(target=lambda: pipe.write_text(text), daemon=True)
    writer.start()
    assert read_named(pipe, limit=1 << 20).decode() == text
    writer.join(10)
    with pytest.raises(OSError, match="more than 1,000 bytes"):
        read_named("/dev/zero", limit=1000)
