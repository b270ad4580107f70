"""Write clipsearch/data/vocabulary.txt, the default tag vocabulary.

It merges two open lists: the everyday objects, scenes, people and activities in
scripts/vocabulary/everyday.txt (written for clipsearch) and the 1,000 ImageNet-1k class
names as open_clip ships them (`open_clip.zero_shot_metadata.IMAGENET_CLASSNAMES`, the
cleaned-up names of the CLIP paper). Terms are deduplicated case-insensitively, first
spelling kept. Run: .venv/bin/python scripts/build_vocabulary.py
"""

from __future__ import annotations

from pathlib import Path

from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

ROOT = Path(__file__).resolve().parent.parent
EVERYDAY = ROOT / "scripts" / "vocabulary" / "everyday.txt"
OUTPUT = ROOT / "clipsearch" / "data" / "vocabulary.txt"
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


def main() -> None:
    seen: dict[str, str] = {}
    for term in [*everyday_terms(), *IMAGENET_CLASSNAMES]:
        seen.setdefault(term.lower(), term)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(HEADER + "\n".join(seen.values()) + "\n", encoding="utf-8")
    print(f"wrote {len(seen)} terms to {OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
