"""Videos in the index: keyframes by scene, hits at a moment, incremental re-runs, bad files.
Real videos, made in the test with PyAV from generated pictures."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import clipsearch
from clipsearch.cli import app
from clipsearch.search.filters import Filter
from tests.conftest import make_image

av = pytest.importorskip("av", reason="videos need PyAV (pip install av)")

from clipsearch.video.decode import picture_at  # noqa: E402
from tests.videos import Scene, Span, turn_for_display, write_video  # noqa: E402

runner = CliRunner()
SIZE = (160, 120)


def _cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def _video(path: Path, seeds: list[int], seconds: float = 2.0, **kw: object) -> list[Span]:
    scenes = [Scene(make_image(s, SIZE), seconds) for s in seeds]
    return write_video(path, scenes, size=SIZE, fps=10, **kw)  # type: ignore[arg-type]


@pytest.fixture
def library(tmp_path: Path) -> tuple[Path, dict[str, list[Span]]]:
    """Two videos of three scenes each (pictures 100-102 and 200-202) and two photos."""
    folder = tmp_path / "library"
    folder.mkdir()
    spans = {
        "a.mp4": _video(folder / "a.mp4", [100, 101, 102]),
        "b.webm": _video(folder / "b.webm", [200, 201, 202], codec="libvpx-vp9"),
    }
    for seed in (300, 301):
        make_image(seed, SIZE).save(folder / f"photo{seed}.jpg", quality=95)
    return folder, spans


def _index(folder: Path, db: Path, *extra: str) -> dict[str, object]:
    out = _cli("index", str(folder), "--db", str(db), "--model", "tiny-random", "--runtime",
               "torch", "--json", "--quiet", "--workers", "0", *extra)  # fmt: skip
    summary: dict[str, object] = json.loads(out)
    return summary


def _search_picture(db: Path, seed: int, tmp_path: Path, k: int = 4) -> list[dict[str, object]]:
    query = tmp_path / f"query{seed}.png"
    make_image(seed, SIZE).save(query)
    out = _cli("search", "--image", str(query), "--db", str(db), "-k", str(k), "--json")
    hits: list[dict[str, object]] = json.loads(out)
    return hits


def test_videos_are_indexed_with_photos_and_found_at_their_moment(
    library: tuple[Path, dict[str, list[Span]]], tmp_path: Path
) -> None:
    folder, spans = library
    db = tmp_path / "db"
    summary = _index(folder, db)
    assert summary["added"] == 4 and summary["videos"] == 2 and summary["skipped"] == []
    assert 6 <= int(summary["keyframes"]) <= 12  # type: ignore[call-overload]
    stats = json.loads(_cli("stats", "--db", str(db), "--json"))
    assert (stats["count"], stats["videos"], stats["keyframes"]) == (4, 2, summary["keyframes"])

    for name, seeds in (("a.mp4", [100, 101, 102]), ("b.webm", [200, 201, 202])):
        for scene, seed in enumerate(seeds):
            hits = _search_picture(db, seed, tmp_path)
            top = hits[0]
            assert Path(str(top["path"])).name == name
            span = spans[name][scene]
            assert span.holds(float(top["time"])), (name, scene, top)  # type: ignore[arg-type]
            start, end = top["span"]  # type: ignore[misc]
            assert start <= top["time"] < end
            # one hit per video: its other keyframes do not fill the page
            assert len({h["path"] for h in hits}) == len(hits)

    photo = _search_picture(db, 300, tmp_path)[0]
    assert Path(str(photo["path"])).name == "photo300.jpg" and "time" not in photo

    plain = _cli("search", "--image", str(tmp_path / "query101.png"), "--db", str(db), "-k", "1")
    assert "a.mp4 @ 00:00:0" in plain


def test_a_rerun_decodes_nothing_a_moved_video_keeps_its_rows_a_deleted_one_goes(
    library: tuple[Path, dict[str, list[Span]]], tmp_path: Path
) -> None:
    folder, _ = library
    db = tmp_path / "db"
    _index(folder, db)
    again = _index(folder, db)
    assert again["unchanged"] == 4 and again["added"] == 0 and again["keyframes"] == 0

    (folder / "clips").mkdir()
    shutil.move(folder / "a.mp4", folder / "clips" / "renamed.mp4")
    (folder / "b.webm").unlink()
    moved = _index(folder, db)
    assert moved["moved"] == 1 and moved["removed"] == 1 and moved["keyframes"] == 0
    hits = _search_picture(db, 101, tmp_path)
    assert Path(str(hits[0]["path"])).name == "renamed.mp4"
    assert all(Path(str(h["path"])).name != "b.webm" for h in hits)
    stats = json.loads(_cli("stats", "--db", str(db), "--json"))
    assert stats["count"] == 3 and stats["videos"] == 1  # the deleted video's keyframes gone
    assert 0 < stats["keyframes"] <= 6


def test_a_copy_of_an_indexed_video_takes_its_keyframes_without_decoding(
    library: tuple[Path, dict[str, list[Span]]], tmp_path: Path
) -> None:
    folder, spans = library
    db = tmp_path / "db"
    first = _index(folder, db)
    shutil.copy(folder / "a.mp4", folder / "copy of a.mp4")
    again = _index(folder, db)
    assert again["added"] == 1 and again["videos"] == 1 and again["encoded"] == 0
    stats = json.loads(_cli("stats", "--db", str(db), "--json"))
    assert stats["videos"] == 3 and stats["keyframes"] == first["keyframes"] + again["keyframes"]
    hits = _search_picture(db, 101, tmp_path)
    both = {Path(str(h["path"])).name: h for h in hits[:2]}
    assert set(both) == {"a.mp4", "copy of a.mp4"}  # the same scene, at the same moment
    assert both["a.mp4"]["time"] == both["copy of a.mp4"]["time"]
    assert spans["a.mp4"][1].holds(float(both["copy of a.mp4"]["time"]))  # type: ignore[arg-type]
    (folder / "a.mp4").unlink()  # the copy stands on its own
    _index(folder, db)
    top = _search_picture(db, 101, tmp_path)[0]
    assert Path(str(top["path"])).name == "copy of a.mp4"


def test_a_phone_video_recorded_upright_is_seen_upright(tmp_path: Path) -> None:
    """Stored on its side with a display rotation: searched as a player shows it."""
    folder = tmp_path / "phone"
    folder.mkdir()
    upright = make_image(400, (120, 160))  # portrait, as the person saw it
    lying = upright.rotate(90, expand=True)  # as the sensor stored it: 160 x 120
    for name in ("turned.mp4", "unturned.mp4"):
        write_video(folder / name, [Scene(lying, 2.0)], size=SIZE, fps=10)
    turn_for_display(folder / "turned.mp4")
    with av.open(str(folder / "turned.mp4")) as container:  # the marking is what FFmpeg reads
        assert next(container.decode(video=0)).rotation == -90
    db = tmp_path / "db"
    _index(folder, db)
    query = tmp_path / "upright.png"
    upright.save(query)
    hits = json.loads(_cli("search", "--image", str(query), "--db", str(db), "-k", "2", "--json"))
    assert [Path(str(h["path"])).name for h in hits] == ["turned.mp4", "unturned.mp4"]
    # What the keyframes and thumbnails are made of: the turned video's frame is the upright
    # picture (portrait, the same pixels up to compression); the unmarked one stays lying.
    seen = picture_at(str(folder / "turned.mp4"), 1.0, 160, 10**7)
    assert seen.size == upright.size
    assert np.abs(np.asarray(seen, np.float32) - np.asarray(upright, np.float32)).mean() < 8
    assert picture_at(str(folder / "unturned.mp4"), 1.0, 160, 10**7).size == lying.size


def test_an_edited_video_is_indexed_again_with_its_new_scenes(
    library: tuple[Path, dict[str, list[Span]]], tmp_path: Path
) -> None:
    folder, _ = library
    db = tmp_path / "db"
    _index(folder, db)
    spans = _video(folder / "a.mp4", [400, 401])  # the same file, re-edited
    summary = _index(folder, db)
    assert summary["updated"] == 1 and summary["videos"] == 1
    top = _search_picture(db, 401, tmp_path)[0]
    assert Path(str(top["path"])).name == "a.mp4" and spans[1].holds(float(top["time"]))  # type: ignore[arg-type]
    # the old scenes went with the old version: no keyframe of them is left to match
    old = _search_picture(db, 101, tmp_path)
    assert all(not (Path(str(h["path"])).name == "a.mp4" and h["score"] > 0.999) for h in old)


def test_corrupt_truncated_and_audio_only_files_are_skipped_with_a_reason(
    library: tuple[Path, dict[str, list[Span]]], tmp_path: Path
) -> None:
    folder, _ = library
    (folder / "garbage.mov").write_bytes(np.random.default_rng(0).bytes(5000))
    whole = (folder / "a.mp4").read_bytes()
    (folder / "cut.mp4").write_bytes(whole[: len(whole) // 2])
    _audio_only(folder / "song.m4v")
    summary = _index(folder, tmp_path / "db")
    reasons = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}  # type: ignore[attr-defined]
    assert set(reasons) == {"garbage.mov", "cut.mp4", "song.m4v"}
    assert reasons["garbage.mov"].startswith("not a readable video")
    assert "video" in reasons["cut.mp4"]
    assert reasons["song.m4v"] == "no video stream in the file (audio only?)"
    assert summary["added"] == 4


def test_max_frames_per_video_caps_the_keyframes(tmp_path: Path) -> None:
    folder = tmp_path / "long"
    folder.mkdir()
    _video(folder / "many.mp4", list(range(500, 510)), seconds=1.5)
    summary = _index(folder, tmp_path / "db", "--max-frames-per-video", "4")
    assert summary["keyframes"] == 4


def _audio_only(path: Path) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = np.zeros((1, 16000), dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_videos_in_postgresql_copy_verify_and_filters(
    library: tuple[Path, dict[str, list[Span]]],
    tmp_path: Path,
    store: Callable[..., str],
) -> None:
    """On both stores: a video found at its moment, a filter that lets the video through
    (its keyframes come with it) or keeps it out; `copy` carries the keyframes and `verify`
    finds the copied folder sound."""
    folder, spans = library
    db = store()
    _cli("index", str(folder), "--db", db, "--model", "tiny-random", "--runtime", "torch",
         "--quiet", "--workers", "0")  # fmt: skip
    query = tmp_path / "q.png"
    make_image(201, SIZE).save(query)
    with clipsearch.open(db, runtime="torch", create=False) as idx:
        hit = idx.search(image=query, k=1, filters=Filter(path_glob="*.webm"))[0]
        assert hit.path.endswith("b.webm") and spans["b.webm"][1].holds(hit.time or -1)
        photos_only = idx.search(image=query, k=4, filters=Filter(path_glob="*.jpg"))
        assert all(h.path.endswith(".jpg") and h.time is None for h in photos_only)
    copied = tmp_path / "copied"
    _cli("copy", db, str(copied))
    with clipsearch.open(copied, runtime="torch", create=False) as idx:
        hit = idx.search(image=query, k=1)[0]
        assert hit.path.endswith("b.webm") and spans["b.webm"][1].holds(hit.time or -1)
    verified = json.loads(_cli("verify", "--db", str(copied), "--json"))
    assert verified["ok"], verified
