"""Write clipsearch/data/vocabulary.txt, the default tag vocabulary, and
clipsearch/data/tag_parents.txt, which of its tags imply which.

It merges two open lists: the everyday objects, scenes, people and activities in
scripts/vocabulary/everyday.txt (written for clipsearch) and the 1,000 ImageNet-1k class
names as open_clip ships them (`open_clip.zero_shot_metadata.IMAGENET_CLASSNAMES`, the
cleaned-up names of the CLIP paper). Terms are deduplicated case-insensitively, first
spelling kept. The parents are scripts/vocabulary/parents.txt (written for clipsearch) plus
groups of ImageNet-1k classes by class index (`IMAGENET_GROUPS`: the dog breeds, the
domestic cats, the birds...) and by name (`IMAGENET_PARENTS`).
Run: .venv/bin/python scripts/build_vocabulary.py
"""

from __future__ import annotations

from pathlib import Path

from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

ROOT = Path(__file__).resolve().parent.parent
EVERYDAY = ROOT / "scripts" / "vocabulary" / "everyday.txt"
OUTPUT = ROOT / "clipsearch" / "data" / "vocabulary.txt"
PARENTS = ROOT / "scripts" / "vocabulary" / "parents.txt"
PARENTS_OUTPUT = ROOT / "clipsearch" / "data" / "tag_parents.txt"
#: ImageNet-1k class index ranges (end exclusive) and the tag each class implies.
IMAGENET_GROUPS = [
    ((0, 7), "fish"), ((389, 398), "fish"), ((7, 25), "bird"), ((80, 101), "bird"),
    ((127, 147), "bird"), ((25, 30), "salamander"), ((30, 33), "frog"), ((33, 38), "turtle"),
    ((38, 49), "lizard"), ((52, 69), "snake"), ((151, 269), "dog"), ((269, 272), "wolf"),
    ((277, 281), "fox"), ((281, 286), "cat"), ((286, 294), "wild animal"),
    ((294, 298), "bear"), ((300, 321), "insect"), ((321, 327), "butterfly"),
    ((365, 383), "monkey"),
]  # fmt: skip
#: ImageNet-1k classes by name and the tag each implies.
IMAGENET_PARENTS = {
    "car": ["station wagon", "taxicab", "jeep", "limousine", "race car", "sports car",
            "convertible", "minivan", "police van", "golf cart"],
    "truck": ["fire truck", "garbage truck", "pickup truck", "tow truck", "semi-trailer truck",
              "moving van"],
    "bus": ["minibus", "school bus", "trolleybus"],
    "bike": ["mountain bike", "tandem bicycle", "tricycle", "unicycle"],
    "boat": ["canoe", "fireboat", "lifeboat", "motorboat", "sailboat", "pirate ship",
             "container ship", "ocean liner", "aircraft carrier", "shipwreck"],
    "building": ["barn", "bell tower", "boathouse", "castle", "church", "dome", "greenhouse",
                 "library", "lighthouse", "monastery", "mosque", "palace", "planetarium",
                 "prison", "stupa", "water tower", "bakery", "restaurant", "barbershop"],
    "ball": ["baseball", "basketball", "croquet ball", "golf ball", "ping-pong ball",
             "rugby ball", "soccer ball", "tennis ball", "volleyball"],
    "person": ["baseball player", "scuba diver"],
}  # fmt: skip
HEADER = (
    "# clipsearch default tag vocabulary: one term per line. Built by\n"
    "# scripts/build_vocabulary.py from scripts/vocabulary/everyday.txt and the ImageNet-1k\n"
    "# class names shipped by open_clip. Pass your own with `clipsearch tag --vocabulary FILE`.\n"
)


def everyday_terms() -> list[str]:
    terms = []
    for line in EVERYDAY.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0]
        terms += [t.strip() for t in line.split(",") if t.strip()]
    return terms


def parent_pairs() -> list[tuple[str, str]]:
    """(child, parent) pairs, in the order written, each once."""
    pairs: dict[tuple[str, str], None] = {}
    for line in PARENTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parent, children = line.split(":", 1)
        for child in children.split(","):
            if child.strip():
                pairs.setdefault((child.strip(), parent.strip()), None)
    for (start, end), parent in IMAGENET_GROUPS:
        for name in IMAGENET_CLASSNAMES[start:end]:
            pairs.setdefault((name, parent), None)
    for parent, names in IMAGENET_PARENTS.items():
        for name in names:
            assert name in IMAGENET_CLASSNAMES, name
            pairs.setdefault((name, parent), None)
    return [p for p in pairs if p[0].lower() != p[1].lower()]


def main() -> None:
    seen: dict[str, str] = {}
    for term in [*everyday_terms(), *IMAGENET_CLASSNAMES]:
        seen.setdefault(term.lower(), term)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(HEADER + "\n".join(seen.values()) + "\n", encoding="utf-8")
    print(f"wrote {len(seen)} terms to {OUTPUT.relative_to(ROOT)}")
    pairs = parent_pairs()
    PARENTS_OUTPUT.write_text(
        "# child<TAB>parent: a tag that implies another. Built by scripts/build_vocabulary.py\n"
        "# from scripts/vocabulary/parents.txt and groups of ImageNet-1k classes.\n"
        + "".join(f"{child}\t{parent}\n" for child, parent in pairs),
        encoding="utf-8",
    )
    print(f"wrote {len(pairs)} parent links to {PARENTS_OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
