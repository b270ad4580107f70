"""Model runtimes on this CPU: torch against ONNX Runtime and OpenVINO, fp32 and int8.

Parts (each table measured in a process of its own, every runtime of a table in that one
process, in interleaved rounds, so the ratios hold when the machine drifts; glibc allocator
tuning on, as clipsearch itself applies it):

- speed: image-tower images/s at batch 32, ViT-B-32 and clipsearch-mini.
- quality: cosine of each runtime's embeddings to torch fp32 (500 Flickr photos, 1,000
  captions); for clipsearch-mini also Flickr validation Recall@1/5/10 (text->image) and
  CIFAR-10 zero-shot accuracy, per runtime and precision.
- pipeline: `Index.add` images/s on the Flickr photos and on 3000x2000 JPEGs, a new index's
  default (auto runtime, auto precision) against torch.
- cli: wall time of `clipsearch --help`, `stats`, a new text query, a repeated one and an
  image query, fresh processes, on an index of 10,000 photos.
- size: the installed size of two fresh virtual environments, the full install (`pip install
  clipsearch`, torch included) and the lean one (requirements-lean.txt, clipsearch --no-deps).

ViT-B-32 has no pretrained weights on this machine: it runs with a fixed random init saved
as a local checkpoint (speed does not depend on the weights; its quality rows are cosines
only, and int8 error on real weights can differ).

    .venv/bin/python benchmarks/runtimes.py [--part speed|quality|pipeline|cli|all]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from PIL import Image

from benchmarks import datasets
from benchmarks._common import RESULTS, markdown_table, write_result

MINI = "clipsearch-mini"
#: (runtime, precision) in table order; torch fp32 is the reference.
VARIANTS = [("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"),
            ("openvino", "int8")]  # fmt: skip
PARTS = ("speed", "quality", "pipeline", "cli", "size")


def vit_spec() -> str:
    """ViT-B-32 with a fixed random init, saved once as a local checkpoint."""
    path = datasets.cache_dir() / "vit-b-32-random-seed0.pt"
    if not path.exists():
        import open_clip
        import torch

        torch.manual_seed(0)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(open_clip.create_model("ViT-B-32").state_dict(), path)
    return f"ViT-B-32:{path}"


def label(runtime: str, precision: str) -> str:
    return f"{runtime} {precision}"


def encoders(spec: str) -> dict[str, Any]:
    """Every variant that loads here, by label; a variant that cannot is left out (and
    said why)."""
    from clipsearch.errors import ClipsearchError
    from clipsearch.models import RuntimeChoice, load_encoder

    out = {}
    for runtime, precision in VARIANTS:
        try:
            out[label(runtime, precision)] = load_encoder(
                spec, "cpu", RuntimeChoice(runtime, precision)
            )
        except ClipsearchError as exc:
            print(f"{spec} {runtime} {precision}: not measured ({exc})", flush=True)
    return out


def pixels_for(encoder: Any, paths: list[Path]) -> Any:
    return np.stack([np.asarray(encoder.preprocess(Image.open(p).convert("RGB"))) for p in paths])


def flickr_photos(count: int) -> list[Path]:
    return sorted((datasets.FLICKR / "images").glob("*.jpg"))[:count]


# -- speed ------------------------------------------------------------------------------


def speed(spec: str, rounds: int, batch: int) -> dict[str, float]:
    found = encoders(spec)
    photos = flickr_photos(batch)
    inputs = {name: pixels_for(e, photos) for name, e in found.items()}
    for name, e in found.items():
        e.encode_images(inputs[name])  # warm up (and make the int8 models)
    seconds: dict[str, list[float]] = {name: [] for name in found}
    for _ in range(rounds):
        for name, e in found.items():
            started = time.perf_counter()
            e.encode_images(inputs[name])
            seconds[name].append(time.perf_counter() - started)
    return {name: batch / statistics.median(s) for name, s in seconds.items()}


# -- quality ----------------------------------------------------------------------------


def cosines(spec: str) -> dict[str, dict[str, float]]:
    found = encoders(spec)
    reference = found[label("torch", "fp32")]
    photos = flickr_photos(500)
    captions = [c for cs in datasets.flickr_captions().values() for c in cs][:1000]
    ref_images = np.concatenate(
        [reference.encode_images(pixels_for(reference, photos[i : i + 50]))
         for i in range(0, len(photos), 50)]
    )  # fmt: skip
    ref_texts = reference.encode_texts(captions)
    out = {}
    texts_of: dict[str, Any] = {}  # int8 quantises the image tower only: one text run each
    for name, e in found.items():
        images = np.concatenate(
            [e.encode_images(pixels_for(e, photos[i : i + 50])) for i in range(0, len(photos), 50)]
        )
        runtime = name.split()[0]
        if runtime not in texts_of:
            texts_of[runtime] = ref_texts if runtime == "torch" else e.encode_texts(captions)
        texts = texts_of[runtime]
        image_cos = (images * ref_images).sum(axis=1)
        text_cos = (texts * ref_texts).sum(axis=1)
        out[name] = {
            "image_mean": float(image_cos.mean()), "image_min": float(image_cos.min()),
            "text_mean": float(text_cos.mean()), "text_min": float(text_cos.min()),
        }  # fmt: skip
        print(spec, name, out[name], flush=True)
    return out


def retrieval(variants: list[tuple[str, str]]) -> dict[str, dict[str, float]]:
    """clipsearch-mini per runtime: Flickr validation text->image recall, CIFAR-10 zero-shot."""
    import clipsearch
    from clipsearch.evaluation import evaluate_captions, evaluate_classes

    _, val = datasets.flickr_split()
    cifar = datasets.cifar_folder("test")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images, captions = datasets.flickr_eval_folder(val, root / "flickr-val")
        for runtime, precision in variants:
            name = label(runtime, precision)
            opened = {"model": MINI, "workers": 2, "runtime": runtime, "precision": precision}
            try:
                with clipsearch.open(root / f"flickr-{runtime}-{precision}", **opened) as idx:
                    flickr = evaluate_captions(idx, images, captions).to_dict()
                with clipsearch.open(root / f"cifar-{runtime}-{precision}", **opened) as idx:
                    classes = evaluate_classes(idx, cifar).to_dict()
            except Exception as exc:  # a runtime that is not installed
                print(f"{name}: not measured ({exc})", flush=True)
                continue
            t2i = flickr["text_to_image"]
            out[name] = {f"R@{k}": t2i[f"R@{k}"] for k in (1, 5, 10)}
            out[name]["cifar10_zero_shot"] = classes["zero_shot_accuracy"]
            print(name, out[name], flush=True)
    return out


# -- pipeline ---------------------------------------------------------------------------


def pipeline(spec: str, flickr_count: int, large_count: int) -> list[dict[str, Any]]:
    from benchmarks.index_throughput import large_photos
    from benchmarks.index_throughput import pipeline as timed_add
    from clipsearch.models import RuntimeChoice, load_encoder

    chosen = {
        "torch": load_encoder(spec, "cpu", RuntimeChoice("torch")),
        # what a new index gets by default: the fastest runtime, at auto precision (int8
        # where the first photos show it close to fp32 and faster; settled by the first add)
        "auto": load_encoder(spec, "cpu", RuntimeChoice("auto", "auto")),
    }
    rows = []
    sets = {"flickr8k-dev": flickr_photos(flickr_count), "3000x2000": large_photos(large_count)}
    for set_name, paths in sets.items():
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "photos"
            folder.mkdir()
            for p in paths:
                os.symlink(p, folder / p.name)
            speeds: dict[str, list[float]] = {"torch": [], "auto": []}
            for _ in range(2):  # interleaved: torch, auto, torch, auto
                for name, encoder in chosen.items():
                    speeds[name].append(timed_add(encoder, folder, 2, 32))
            rows.append({
                "model": spec, "photos": set_name, "count": len(paths),
                "auto_runtime": f"{chosen['auto'].runtime} {chosen['auto'].precision}",
                "torch": max(speeds["torch"]), "auto": max(speeds["auto"]),
            })  # fmt: skip
            print(rows[-1], flush=True)
    return rows


# -- cli ----------------------------------------------------------------------------------


def cli_index(spec: str, db: Path) -> None:
    """10,000 photos: CIFAR-10 test through the real pipeline for clipsearch-mini; for
    ViT-B-32 (15-28 images/s here) 10,000 synthetic unit vectors recorded under its model,
    which is what the CLI loads and searches (the query still runs the real model)."""
    if spec == MINI:
        cli = str(Path(sys.executable).with_name("clipsearch"))
        subprocess.run([cli, "index", str(datasets.cifar_folder("test")), "--db", str(db),
                        "--model", spec, "-q"], check=True)  # fmt: skip
        return
    from clipsearch.models import model_identity
    from clipsearch.storage.db import Database, ImageRecord
    from clipsearch.storage.location import locate

    rng = np.random.default_rng(0)
    store = Database.open(locate(str(db)))
    store.set_meta(model_spec=spec, model_identity=model_identity(spec), dim="512")
    x = rng.normal(size=(10_000, 512)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    store.write_images([
        ImageRecord(f"/s/{i % 100:02d}/{i:07d}.jpg", 1, 1, f"{i:064x}", 4, 3, "JPEG", None, x[i])
        for i in range(len(x))
    ])  # fmt: skip
    store.close()


def cli_times(spec: str, runs: int) -> dict[str, dict[str, float]]:
    cli = str(Path(sys.executable).with_name("clipsearch"))
    photo = str(flickr_photos(1)[0])
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "db"
        cli_index(spec, db)
        # Export and measure once (what the first use does), outside the timed runs.
        subprocess.run([cli, "search", "warm up", "--db", str(db)], check=True,
                       capture_output=True)  # fmt: skip
        for runtime in ("auto", "torch"):
            on = ["--db", str(db), "--runtime", runtime]
            commands: dict[str, Callable[[int], list[str]]] = {
                "--help": lambda run: ["--help"],
                "stats": lambda run: ["stats", "--db", str(db)],
                "new text query": lambda run, on=on: [
                    "search", f"a dog in the snow {on[-1]} {run}", *on],
                "repeated text query": lambda run, on=on: ["search", "a red car", *on],
                "image query": lambda run, on=on: ["search", "--image", photo, *on],
            }  # fmt: skip
            times: dict[str, list[float]] = {name: [] for name in commands}
            for run in range(runs + 1):  # the first run of each is a warm-up
                for name, argv in commands.items():
                    started = time.perf_counter()
                    subprocess.run([cli, *argv(run)], check=True, capture_output=True)
                    if run:
                        times[name].append(time.perf_counter() - started)
            out[runtime] = {name: statistics.median(t) for name, t in times.items()}
            print(spec, runtime, out[runtime], flush=True)
    return out


# -- size ---------------------------------------------------------------------------------


def install_sizes() -> dict[str, float]:
    """MiB of a fresh venv per install (pip takes the packages from its local mirror)."""
    repo = Path(__file__).resolve().parent.parent
    torch_pins = ["-c", str(repo / "requirements" / "constraints.in")]  # this machine's torch
    installs = {
        "full (pip install clipsearch)": [[*torch_pins, "-e", str(repo)]],
        "lean (requirements-lean.txt)": [["-r", str(repo / "requirements-lean.txt")],
                                         ["--no-deps", "-e", str(repo)]],
    }  # fmt: skip
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, steps in installs.items():
            venv = Path(tmp) / name.split()[0]
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            for step in steps:
                subprocess.run([str(venv / "bin" / "pip"), "install", "-q",
                                "--disable-pip-version-check", *step], check=True,
                               capture_output=True)  # fmt: skip
            du = subprocess.run(["du", "-sm", str(venv)], check=True, capture_output=True,
                                text=True).stdout  # fmt: skip
            sizes[name] = float(du.split()[0])
            print(name, sizes[name], flush=True)
    return sizes


# -- driver -------------------------------------------------------------------------------


def run_part(part: str, args: argparse.Namespace) -> dict[str, Any]:
    from clipsearch._malloc import keep_freed_memory

    keep_freed_memory()
    specs = {"ViT-B-32": vit_spec(), MINI: MINI}
    if part == "speed":
        return {name: speed(spec, args.rounds, 32) for name, spec in specs.items()}
    if part == "quality":
        return {
            "cosines": {name: cosines(spec) for name, spec in specs.items()},
            "mini_retrieval": retrieval(VARIANTS),
        }
    if part == "pipeline":
        return {"rows": [r for spec in specs.values() for r in pipeline(spec, 800 if spec == MINI
                         else 256, 96)]}  # fmt: skip
    if part == "size":
        return install_sizes()
    return {name: cli_times(spec, args.runs) for name, spec in specs.items()}


def render(results: dict[str, Any]) -> str:
    parts = []
    if "speed" in results:
        rows = []
        for model, figures in results["speed"].items():
            ref = figures.get("torch fp32")
            for name, value in figures.items():
                ratio = f"{value / ref:.2f}x" if ref else "-"
                rows.append([model, name, f"{value:.1f}", ratio])
        parts += ["## Image tower, images/s (batch 32, one process, interleaved rounds)",
                  markdown_table(["model", "runtime", "img/s", "vs torch fp32"], rows)]  # fmt: skip
    if "quality" in results:
        rows = []
        for model, by_name in results["quality"]["cosines"].items():
            for name, c in by_name.items():
                rows.append([model, name, f"{c['image_mean']:.5f}", f"{c['image_min']:.5f}",
                             f"{c['text_mean']:.6f}", f"{c['text_min']:.6f}"])  # fmt: skip
        parts += ["## Cosine to torch fp32 (500 Flickr photos, 1,000 captions)",
                  markdown_table(["model", "runtime", "image mean", "image min", "text mean",
                                  "text min"], rows)]  # fmt: skip
        rows = [[name, *(f"{100 * r[f'R@{k}']:.1f}" for k in (1, 5, 10)),
                 f"{100 * r['cifar10_zero_shot']:.2f}"]
                for name, r in results["quality"]["mini_retrieval"].items()]  # fmt: skip
        parts += ["## clipsearch-mini quality per runtime (Flickr validation, never trained on; "
                  "CIFAR-10 test)",
                  markdown_table(["runtime", "text->image R@1", "R@5", "R@10",
                                  "CIFAR-10 zero-shot %"], rows)]  # fmt: skip
    if "pipeline" in results:
        rows = [[r["model"].split(":")[0], r["photos"], str(r["count"]), r["auto_runtime"],
                 f"{r['torch']:.1f}", f"{r['auto']:.1f}", f"{r['auto'] / r['torch']:.2f}x"]
                for r in results["pipeline"]["rows"]]  # fmt: skip
        parts += ["## Whole pipeline (`Index.add`, 2 decoding workers, batch 32), images/s",
                  markdown_table(["model", "photos", "count", "auto chose", "torch",
                                  "auto (default)", "ratio"], rows)]  # fmt: skip
    if "cli" in results:
        rows = []
        for model, by_runtime in results["cli"].items():
            for command in by_runtime["auto"]:
                rows.append([model, command, f"{by_runtime['auto'][command]:.2f}",
                             f"{by_runtime['torch'][command]:.2f}"])  # fmt: skip
        parts += ["## CLI wall seconds (median of fresh processes, index of 10,000 photos)",
                  markdown_table(["model", "command", "default runtime (auto)", "--runtime torch"],
                                 rows)]  # fmt: skip
    if "size" in results:
        rows = [[name, f"{mib / 1024:.2f} GiB"] for name, mib in results["size"].items()]
        parts += ["## Installed size (a fresh virtual environment each)",
                  markdown_table(["install", "size"], rows)]  # fmt: skip
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", default="all", choices=[*PARTS, "all"])
    parser.add_argument("--rounds", type=int, default=7, help="speed: timed rounds per runtime")
    parser.add_argument("--runs", type=int, default=5, help="cli: timed runs per command")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--render", action="store_true", help="rewrite the table, measure nothing")
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(run_part(args.part, args)), flush=True)
        return
    path = RESULTS / "runtimes.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    for part in () if args.render else PARTS if args.part == "all" else (args.part,):
        argv = [sys.executable, __file__, "--part", part, "--child", "--rounds",
                str(args.rounds), "--runs", str(args.runs)]  # fmt: skip
        out = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True).stdout
        results[part] = json.loads(out.rsplit("RESULT ", 1)[1])
        path.write_text(json.dumps(results, indent=1) + "\n")
    body = render(results) + "\n\n" + NOTES
    write_result("runtimes", "Model runtimes", body)
    print(body)


NOTES = (
    "ViT-B-32 runs with a fixed random init (no pretrained weights reach this machine): its "
    "speed is the trained model's, its cosines say how faithfully each runtime computes the "
    "same function, and int8 error on trained weights can differ. int8: ONNX Runtime dynamic "
    "quantisation (int8 weights, per-batch activation scales; full-range or 7-bit weights, "
    "whichever is closer to fp32 on the first batch); OpenVINO static quantisation with NNCF, "
    "calibrated on the 32 Flickr photos of the speed batch. Pipeline: `auto` is what a new "
    "index's default chose on this machine (runtime and precision). CLI: ViT-B-32's index "
    "holds 10,000 synthetic vectors under its model (the query runs the real model); "
    "clipsearch-mini's is CIFAR-10 test. Each part runs in its own process; parts measured "
    "at different times are not compared with each other."
)


if __name__ == "__main__":
    main()
