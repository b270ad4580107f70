"""Videos: keyframe recall, throughput, memory, moment retrieval and summaries.

Test videos are made from real photos: the 200 Flickr8k photos of the validation split
(which clipsearch-mini's image tower never trained on, and which the scene rules were not
tuned on: those were tried on videos of fit-split photos) become scenes of 2-6 s each,
still, panned or zoomed, joined by cuts or cross-fades, with or without grain, at 720p and
1080p, in H.264, H.265 and VP9 (`tests/videos.py` writes them with PyAV; they are cached in
`$CLIPSEARCH_DATA_CACHE/bench-videos`).

Parts:
- keyframes: per video kind, the share of scenes with at least one keyframe inside them
  (bar: >= 0.95), keyframes kept per minute, and decode+embed throughput in video-seconds
  per wall-second (clipsearch-mini, ONNX Runtime, this CPU).
- moments: every video indexed (clipsearch-mini); each scene photo's five captions as
  queries: R@1 (top hit is the right video and its time falls inside the right scene) and
  R@5 (the right video with such a time among the top 5). For reference, the same photos
  indexed as stills: text->image R@1/R@5 over them.
- summary: with k = the number of scenes, the share of scenes the k summary frames fall in
  (bar: >= 0.9), against k frames sampled uniformly over time.
- memory: peak RSS of a process indexing one 30-minute 1080p video (a test video of about
  40 s repeated without re-encoding) against one indexing that short video alone, and the
  throughput of each.

    .venv/bin/python benchmarks/video.py [--part keyframes|moments|summary|memory|all]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image

from benchmarks import datasets
from benchmarks._common import RESULTS, markdown_table, write_result
from tests.videos import Scene, Span, repeat_video, write_video

MINI = "clipsearch-mini"
PARTS = ("keyframes", "moments", "summary", "memory")
#: (name, size, codec, fade seconds, grain) of each kind of test video; two videos a kind.
KINDS = [
    ("720p h264 cuts", (1280, 720), "libx264", 0.0, 0.0),
    ("720p h264 fades+grain", (1280, 720), "libx264", 1.0, 6.0),
    ("720p h265 fades", (1280, 720), "libx265", 0.5, 0.0),
    ("720p vp9 cuts+grain", (1280, 720), "libvpx-vp9", 0.0, 6.0),
    ("1080p h264 fades", (1920, 1080), "libx264", 0.5, 0.0),
    ("1080p h264 cuts+grain", (1920, 1080), "libx264", 0.0, 6.0),
]
VIDEOS_PER_KIND = 2
SCENES_PER_VIDEO = 10
FPS = 24


def video_folder() -> Path:
    return datasets.cache_dir() / "bench-videos"


def build_videos() -> list[dict[str, Any]]:
    """The test videos (made once, then read from the cache): path, kind, scene photos and
    spans."""
    folder = video_folder()
    manifest = folder / "manifest.json"
    if manifest.exists():
        return list(json.loads(manifest.read_text()))
    folder.mkdir(parents=True, exist_ok=True)
    _, validation = datasets.flickr_split()
    rng = random.Random(17)
    photos = list(validation)
    rng.shuffle(photos)
    videos = []
    n = 0
    for kind, size, codec, fade, grain in KINDS:
        for _ in range(VIDEOS_PER_KIND):
            names = photos[n * SCENES_PER_VIDEO : (n + 1) * SCENES_PER_VIDEO]
            scenes = [
                Scene(Image.open(datasets.FLICKR / "images" / name), rng.uniform(2.0, 6.0),
                      rng.choice(["still", "pan", "zoom"]))
                for name in names
            ]  # fmt: skip
            ext = ".webm" if codec == "libvpx-vp9" else ".mp4"
            path = folder / f"video{n:02d}{ext}"
            started = time.perf_counter()
            spans = write_video(path, scenes, size=size, fps=FPS, codec=codec, fade=fade,
                                noise=grain, seed=n)  # fmt: skip
            print(f"made {path.name} ({kind}) in {time.perf_counter() - started:.0f} s", flush=True)
            videos.append({"path": str(path), "kind": kind, "photos": names,
                           "spans": [[s.start, s.end] for s in spans]})  # fmt: skip
            n += 1
    manifest.write_text(json.dumps(videos, indent=1))
    return videos


def spans_of(video: dict[str, Any]) -> list[Span]:
    return [Span(a, b) for a, b in video["spans"]]


def part_keyframes(videos: list[dict[str, Any]]) -> dict[str, Any]:
    from clipsearch.models import load_encoder
    from clipsearch.video.keyframes import VideoOptions, embed_video

    encoder = load_encoder(MINI)
    rows: dict[str, dict[str, float]] = {}
    for video in videos:
        started = time.perf_counter()
        embedded = embed_video(video["path"], encoder, VideoOptions(), max_pixels=10**9)
        seconds = time.perf_counter() - started
        times = embedded.keyframes.times
        found = sum(any(s.holds(t) for t in times) for s in spans_of(video))
        row = rows.setdefault(video["kind"], {"scenes": 0, "found": 0, "kept": 0,
                                              "video_s": 0.0, "wall_s": 0.0})  # fmt: skip
        row["scenes"] += len(video["spans"])
        row["found"] += found
        row["kept"] += len(times)
        row["video_s"] += embedded.duration
        row["wall_s"] += seconds
        name = Path(video["path"]).name
        print(f"{name}: {found}/{len(video['spans'])} scenes, {len(times)} keyframes, "
              f"{embedded.duration / seconds:.1f}x", flush=True)  # fmt: skip
    total = {k: sum(r[k] for r in rows.values()) for k in ("scenes", "found", "kept", "video_s",
                                                             "wall_s")}  # fmt: skip
    rows["all"] = total
    return rows


def render_keyframes(rows: dict[str, Any]) -> str:
    table = [
        [kind, f"{int(r['found'])}/{int(r['scenes'])}", f"{r['found'] / r['scenes']:.3f}",
         f"{r['kept'] / (r['video_s'] / 60):.1f}", f"{r['video_s'] / r['wall_s']:.1f}"]
        for kind, r in rows.items()
    ]  # fmt: skip
    return markdown_table(
        ["videos", "scenes with a keyframe", "scene recall (bar 0.95)", "keyframes / min",
         "video-s per wall-s"], table,
    )  # fmt: skip


def _caption_queries(videos: list[dict[str, Any]]) -> list[tuple[str, str, Span]]:
    captions = datasets.flickr_captions()
    return [
        (caption, video["path"], span)
        for video in videos
        for name, span in zip(video["photos"], spans_of(video), strict=True)
        for caption in captions[name]
    ]


def part_moments(videos: list[dict[str, Any]]) -> dict[str, Any]:
    import clipsearch

    work = Path(tempfile.mkdtemp(prefix="bench-moments-"))
    try:
        library = work / "videos"
        library.mkdir()
        for video in videos:
            (library / Path(video["path"]).name).symlink_to(video["path"])
        idx = clipsearch.open(work / "index", model=MINI)
        started = time.perf_counter()
        summary = idx.add([library])
        index_s = time.perf_counter() - started
        queries = _caption_queries(videos)
        r1 = r5 = video_r1 = 0
        for text, path, span in queries:
            hits = idx.search(text, k=5, mode="semantic")
            # the index holds the library's links, named as the cached videos are
            right = [Path(h.path).name == Path(path).name for h in hits]
            good = [
                r and h.time is not None and span.holds(h.time)
                for r, h in zip(right, hits, strict=True)
            ]
            r1 += bool(good and good[0])
            r5 += any(good)
            video_r1 += bool(right and right[0])
        # the same photos as stills, for reference
        stills = work / "stills"
        stills.mkdir()
        names = [n for v in videos for n in v["photos"]]
        for name in names:
            (stills / name).symlink_to(datasets.FLICKR / "images" / name)
        photos = clipsearch.open(work / "photos", model=MINI)
        photos.add([stills])
        captions = datasets.flickr_captions()
        s1 = s5 = 0
        for name in names:
            for caption in captions[name]:
                found = [Path(h.path).name for h in photos.search(caption, k=5, mode="semantic")]
                s1 += bool(found and found[0] == name)
                s5 += name in found
        count = len(queries)
        return {
            "queries": count, "videos": len(videos), "keyframes": summary.keyframes,
            "index_seconds": round(index_s, 1), "r1": r1 / count, "r5": r5 / count,
            "video_r1": video_r1 / count,
            "stills_r1": s1 / count, "stills_r5": s5 / count,
        }  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


def render_moments(r: dict[str, Any]) -> str:
    return markdown_table(
        ["collection", "queries", "R@1", "R@5"],
        [[f"{r['videos']} videos ({r['keyframes']} keyframes): right video, time in the "
          "right scene", str(r["queries"]), f"{r['r1']:.3f}", f"{r['r5']:.3f}"],
         [f"the same {r['videos']} videos: right video, any time", str(r["queries"]),
          f"{r.get('video_r1', float('nan')):.3f}", ""],
         [f"the same {r['videos'] * SCENES_PER_VIDEO} photos as stills: right photo",
          str(r["queries"]), f"{r['stills_r1']:.3f}", f"{r['stills_r5']:.3f}"]],
    )  # fmt: skip


def part_summary(videos: list[dict[str, Any]]) -> dict[str, Any]:
    from clipsearch.models import load_encoder
    from clipsearch.video.keyframes import VideoOptions, embed_video
    from clipsearch.video.select import choose_frames

    encoder = load_encoder(MINI)
    covered = uniform = scenes = 0
    for video in videos:
        spans = spans_of(video)
        k = len(spans)
        embedded = embed_video(video["path"], encoder, VideoOptions(), max_pixels=10**9)
        frames = embedded.keyframes
        chosen = choose_frames(frames.times, frames.vectors, k, embedded.duration)
        times = [float(frames.times[c]) for c in chosen]
        even = [(i + 0.5) * embedded.duration / k for i in range(k)]
        covered += sum(any(s.holds(t) for t in times) for s in spans)
        uniform += sum(any(s.holds(t) for t in even) for s in spans)
        scenes += k
    return {"scenes": scenes, "summary": covered / scenes, "uniform": uniform / scenes}


def render_summary(r: dict[str, Any]) -> str:
    return markdown_table(
        ["k = scenes per video", "scenes", "covered by the summary (bar 0.9)",
         "covered by k uniform frames"],
        [["10", str(r["scenes"]), f"{r['summary']:.3f}", f"{r['uniform']:.3f}"]],
    )  # fmt: skip


_MEMORY_CHILD = """
import json, resource, sys, time
import clipsearch
idx = clipsearch.open(sys.argv[1], model=sys.argv[3])
started = time.perf_counter()
summary = idx.add([sys.argv[2]])
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "keyframes": summary.keyframes, "skipped":
                  [s.reason for s in summary.skipped],
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def part_memory(videos: list[dict[str, Any]]) -> dict[str, Any]:
    source = next(v for v in videos if v["kind"].startswith("1080p h264"))
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        minute = work / "short.mp4"
        shutil.copy(source["path"], minute)
        duration = sum(b - a for a, b in source["spans"])
        times = max(1, round(1800 / duration))
        long = work / "half-hour.mp4"
        repeat_video(Path(source["path"]), long, times)
        out = {}
        for name, path in (("short", minute), ("long", long)):
            (work / name).mkdir()
            shutil.move(path, work / name / path.name)
            done = subprocess.run(
                [sys.executable, "-c", _MEMORY_CHILD, str(work / f"{name}-index"),
                 str(work / name), MINI], capture_output=True, text=True, check=True,
            )  # fmt: skip
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result["video_seconds"] = duration * (1 if name == "short" else times)
            out[name] = result
            print(name, result, flush=True)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def render_memory(r: dict[str, Any]) -> str:
    rows = [
        [f"{v['video_seconds'] / 60:.1f} min 1080p H.264", f"{v['peak_mib']:.0f}",
         str(v["keyframes"]), f"{v['video_seconds'] / v['seconds']:.1f}"]
        for v in (r["short"], r["long"])
    ]  # fmt: skip
    return markdown_table(
        ["indexing one video", "peak RSS (MiB)", "keyframes", "video-s per wall-s"], rows
    )


RENDER = {"keyframes": render_keyframes, "moments": render_moments, "summary": render_summary,
          "memory": render_memory}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument("--render", action="store_true", help="rewrite the table from the json")
    args = parser.parse_args()
    results_json = RESULTS / "video.json"
    results = json.loads(results_json.read_text()) if results_json.exists() else {}
    if not args.render:
        videos = build_videos()
        for part in PARTS if args.part == "all" else (args.part,):
            started = time.perf_counter()
            results[part] = globals()[f"part_{part}"](videos)
            print(f"{part}: {time.perf_counter() - started:.0f} s", flush=True)
            results_json.write_text(json.dumps(results, indent=1))
    body = []
    for part in PARTS:
        if part in results:
            body.append(f"## {part}\n\n{RENDER[part](results[part])}")
    path = write_result("video", "Videos: keyframes, moments, summaries, memory", "\n\n".join(body))
    print(path.read_text())


if __name__ == "__main__":
    main()
