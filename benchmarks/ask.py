"""Questions about pictures (`Index.ask`), answered zero-shot with clipsearch-mini.

Parts:
- cifar: 1,000 CIFAR-10 test photos (the first 100 of each class), "what is in this
  picture?" with the 10 class names as answers, against zero-shot classification over the
  same stored vectors (the two should agree on every photo).
- yesno: yes/no questions made from the captions of the 200 Flickr validation photos: for
  each photo, one question about something its five captions name ("is there a dog?") and
  one about something none of them names, from the groups below (balanced yes/no):
  accuracy over the answered ones, the "not sure" rate, and accuracy counting "not sure" as
  wrong. `--part yesno-fit` runs the same on the 600 fit-split photos over a grid of the
  constants (`YES_Z`, `UNSURE_Z`): that is where they were chosen, not on the reported split.
- open: the 50 hand-written what/which questions of `data/ask_questions.json` about Flickr
  validation photos, answered from the tag vocabulary (colours for colour questions): top-1
  and top-3 accuracy.

    .venv/bin/python benchmarks/ask.py [--part cifar|yesno|open|yesno-fit|all]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from benchmarks import datasets
from benchmarks._common import RESULTS, markdown_table, write_result

MINI = "clipsearch-mini"
PARTS = ("cifar", "yesno", "open")
#: (question, words any of which in a caption means the photo shows it)
GROUPS = [
    ("is there a dog?", "dog dogs puppy puppies terrier poodle collie retriever"),
    ("is there a horse?", "horse horses pony foal"),
    ("is there water?", "water ocean sea lake river pool swimming surf waves splashes"),
    ("is there snow?", "snow snowy ski skier skiing skiers snowboard"),
    ("is there grass?", "grass grassy field lawn meadow"),
    ("is there a ball?", "ball balls football soccer basketball"),
    ("is there a bicycle?", "bike bicycle bicycles cyclist biker bikes bmx"),
    ("is there a car?", "car cars truck vehicle jeep"),
    ("is this a beach?", "beach sand sandy shore ocean"),
    ("are there mountains?", "mountain mountains hill hills cliff"),
    ("is this a street?", "street streets road sidewalk city"),
    ("is there a child?", "child children kid kids boy boys girl girls baby toddler"),
    ("are there trees?", "tree trees forest woods wooded"),
]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def yes_no_questions(names: list[str], seed: int = 0) -> list[tuple[str, str, bool]]:
    """(photo, question, truth): per photo one question it should answer yes, one no."""
    captions = datasets.flickr_captions()
    rng = random.Random(seed)
    out = []
    for name in names:
        said = set().union(*(_words(c) for c in captions[name]))
        present = [q for q, words in GROUPS if said & set(words.split())]
        absent = [q for q, words in GROUPS if not said & set(words.split())]
        if present and absent:
            out.append((name, rng.choice(present), True))
            out.append((name, rng.choice(absent), False))
    return out


def _index_photos(names: list[str], work: Path) -> Any:
    import clipsearch

    folder = work / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).symlink_to(datasets.FLICKR / "images" / name)
    idx = clipsearch.open(work / "index", model=MINI)
    idx.add([folder])
    return idx


def part_cifar() -> dict[str, Any]:
    import clipsearch
    from clipsearch.search.prompts import prompt_vectors

    root = datasets.cifar_folder("test")
    work = Path(tempfile.mkdtemp(prefix="bench-ask-cifar-"))
    try:
        folder = work / "photos"
        truth = {}
        for label in datasets.CIFAR_CLASSES:
            (folder / label).mkdir(parents=True)
            for path in sorted((root / label).glob("*.jpg"))[:100]:
                (folder / label / path.name).symlink_to(path)
                truth[str(folder / label / path.name)] = label
        idx = clipsearch.open(work / "index", model=MINI)
        idx.add([folder])
        ids = idx.db.ids_by_path()
        classes = list(datasets.CIFAR_CLASSES)
        started = time.perf_counter()
        full = {p: idx.ask(i, "what is in this picture?", answers=classes, top=len(classes))
                for p, i in ids.items()}  # fmt: skip
        ask_s = time.perf_counter() - started
        asked = {p: a.best for p, a in full.items()}
        confidence = [full[p].answers[0].probability for p in sorted(full)]
        right = [asked[p] == truth[p] for p in sorted(full)]
        given = [next(a.probability for a in full[p].answers if a.answer == truth[p])
                 for p in sorted(full)]  # fmt: skip
        prompts = prompt_vectors(idx.encode_texts, classes)
        order = sorted(ids)
        vectors = idx.image_vectors([ids[p] for p in order])
        zero_shot = dict(zip(order, (classes[i] for i in (vectors @ prompts.T).argmax(1)),
                             strict=True))  # fmt: skip
        n = len(order)
        return {
            "photos": n,
            "ask_accuracy": sum(asked[p] == truth[p] for p in order) / n,
            "zero_shot_accuracy": sum(zero_shot[p] == truth[p] for p in order) / n,
            "agreement": sum(asked[p] == zero_shot[p] for p in order) / n,
            "ms_per_question": 1000 * ask_s / n,
            "logit_scale": float(getattr(idx.encoder, "logit_scale", 0.0) or 0.0),
            "mean_confidence": sum(confidence) / n,
            "ece": expected_calibration_error(confidence, right),
            "nll": -sum(math.log(max(p, 1e-12)) for p in given) / n,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _score_yes_no(idx: Any, questions: list[tuple[str, str, bool]], folder: Path) -> list[float]:
    """The z of each question (the constants decide yes / no / not sure from it)."""
    ids = idx.db.ids_by_path()
    return [idx.ask(ids[str(folder / name)], q).answers[0].score for name, q, _ in questions]


def _judge(zs: list[float], truths: list[bool], yes_z: float, unsure: float) -> dict[str, float]:
    pairs = zip(zs, truths, strict=True)
    answered = [(z >= yes_z, t) for z, t in pairs if abs(z - yes_z) >= unsure]
    right = sum(a == t for a, t in answered)
    n = len(zs)
    return {
        "questions": n,
        "accuracy_answered": right / max(1, len(answered)),
        "not_sure": 1 - len(answered) / n,
        "accuracy_all": right / n,
    }


def _yes_no_run(names: list[str]) -> tuple[list[float], list[bool], int]:
    work = Path(tempfile.mkdtemp(prefix="bench-ask-yesno-"))
    try:
        idx = _index_photos(names, work)
        questions = yes_no_questions(names)
        zs = _score_yes_no(idx, questions, work / "photos")
        return zs, [t for _, _, t in questions], sum(t for _, _, t in questions)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def part_yesno() -> dict[str, Any]:
    from clipsearch import asking

    _, validation = datasets.flickr_split()
    zs, truths, yes = _yes_no_run(validation)
    out = _judge(zs, truths, asking.YES_Z, asking.UNSURE_Z)
    out["yes_questions"] = yes
    out["yes_z"], out["unsure_z"] = asking.YES_Z, asking.UNSURE_Z
    return out


def part_yesno_fit() -> dict[str, Any]:
    fit, _ = datasets.flickr_split()
    zs, truths, _ = _yes_no_run(fit)
    grid = {}
    for yes_z in (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5):
        for unsure in (0.0, 0.25, 0.5):
            grid[f"{yes_z}/{unsure}"] = _judge(zs, truths, yes_z, unsure)
    return grid


def part_open() -> dict[str, Any]:
    data = json.loads((Path(__file__).parent / "data" / "ask_questions.json").read_text())
    questions = data["questions"]
    _, validation = datasets.flickr_split()
    work = Path(tempfile.mkdtemp(prefix="bench-ask-open-"))
    try:
        idx = _index_photos(validation, work)
        ids = idx.db.ids_by_path()
        top1 = top3 = 0
        rows = []
        for q in questions:
            found = idx.ask(ids[str(work / "photos" / q["image"])], q["q"], top=3)
            answers = [a.answer for a in found.answers]
            good = [any(_holds(a, word) for word in q["accept"]) for a in answers]
            top1 += good[0]
            top3 += any(good)
            rows.append({"q": q["q"], "image": q["image"], "answers": answers})
        return {"questions": len(questions), "top1": top1 / len(questions),
                "top3": top3 / len(questions), "answers": rows}  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _holds(answer: str, word: str) -> bool:
    return re.search(rf"\b{re.escape(word.lower())}\b", answer.lower()) is not None


def expected_calibration_error(confidence: list[float], right: list[bool], bins: int = 10) -> float:
    """How far the stated probability of the answer given is from how often it is right,
    averaged over 10 equal-width confidence bins weighted by their share of questions."""
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = [n for n, c in enumerate(confidence) if low < c <= high or (b == 0 and c == 0)]
        if inside:
            stated = sum(confidence[n] for n in inside) / len(inside)
            hit = sum(right[n] for n in inside) / len(inside)
            total += len(inside) / len(confidence) * abs(stated - hit)
    return total


def render(results: dict[str, Any]) -> str:
    parts = []
    if "cifar" in results:
        r = results["cifar"]
        parts.append("## CIFAR-10: \"what is in this picture?\"\n\n" + markdown_table(
            ["photos", "ask accuracy", "zero-shot accuracy", "same answer", "ms / question"],
            [[str(r["photos"]), f"{r['ask_accuracy']:.4f}", f"{r['zero_shot_accuracy']:.4f}",
              f"{r['agreement']:.4f}", f"{r['ms_per_question']:.1f}"]],
        ) + "\n\nHow far the answers' probabilities can be trusted (softmax at the model's "
          "trained logit scale; expected calibration error over 10 bins, lower is better):\n\n"
          + markdown_table(
            ["logit scale", "mean probability of the answer given", "accuracy", "ECE",
             "NLL of the right class"],
            [[f"{r['logit_scale']:.2f}", f"{r['mean_confidence']:.3f}",
              f"{r['ask_accuracy']:.3f}", f"{r['ece']:.3f}", f"{r['nll']:.3f}"]],
        ))  # fmt: skip
    if "yesno" in results:
        r = results["yesno"]
        parts.append("## Yes/no questions from Flickr validation captions\n\n" + markdown_table(
            ["questions (yes / no)", "accuracy, answered", "not sure", "accuracy, all",
             "YES_Z / UNSURE_Z"],
            [[f"{r['questions']} ({r['yes_questions']} / {r['questions'] - r['yes_questions']})",
              f"{r['accuracy_answered']:.3f}", f"{r['not_sure']:.3f}", f"{r['accuracy_all']:.3f}",
              f"{r['yes_z']} / {r['unsure_z']}"]],
        ))  # fmt: skip
    if "open" in results:
        r = results["open"]
        parts.append("## Open what/which questions (hand-written, Flickr validation)\n\n"
                     + markdown_table(["questions", "top-1", "top-3"],
                                      [[str(r["questions"]), f"{r['top1']:.2f}",
                                        f"{r['top3']:.2f}"]]))  # fmt: skip
    if "yesno-fit" in results:
        rows = [
            [k, f"{v['accuracy_answered']:.3f}", f"{v['not_sure']:.3f}", f"{v['accuracy_all']:.3f}"]
            for k, v in results["yesno-fit"].items()
        ]
        headers = ["YES_Z / UNSURE_Z", "accuracy, answered", "not sure", "accuracy, all"]
        parts.append("## Choosing the yes/no constants (fit split, not reported above)\n\n"
                     + markdown_table(headers, rows))  # fmt: skip
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=[*PARTS, "yesno-fit", "all"], default="all")
    parser.add_argument("--render", action="store_true")
    args = parser.parse_args()
    path = RESULTS / "ask.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if not args.render:
        for part in PARTS if args.part == "all" else (args.part,):
            started = time.perf_counter()
            results[part] = globals()[f"part_{part.replace('-', '_')}"]()
            print(f"{part}: {time.perf_counter() - started:.0f} s", flush=True)
            path.write_text(json.dumps(results, indent=1))
    out = write_result("ask", "Questions about pictures (zero-shot, clipsearch-mini)",
                       render(results))  # fmt: skip
    print(out.read_text())


if __name__ == "__main__":
    main()
