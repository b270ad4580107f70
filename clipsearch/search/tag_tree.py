"""Which tags imply which: a breed is also a "dog", a sedan a "car", a cathedral a
"building". Read from `clipsearch/data/tag_parents.txt` (built by
scripts/build_vocabulary.py); chains are followed, so "vehicle" takes in every car.

A tag filter (`--tag dog`) matches an image carrying the tag or any tag below it, whatever
its case; stored tags themselves stay as they were given.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from importlib import resources


class TagTree:
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.children: dict[str, set[str]] = defaultdict(set)
        for child, parent in pairs:
            self.children[parent.lower()].add(child.lower())

    def below(self, tag: str) -> set[str]:
        """The tag and every tag that implies it (lower case)."""
        return _walk(tag.lower(), self.children)


def _walk(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def parse(text: str) -> list[tuple[str, str]]:
    """ "child<TAB>parent" lines; `#` comments and blank lines skipped."""
    pairs = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].rstrip("\n")
        if "\t" in line:
            child, parent = line.split("\t", 1)
            if child.strip() and parent.strip():
                pairs.append((child.strip(), parent.strip()))
    return pairs


@functools.cache
def shipped() -> TagTree:
    """The tree shipped with clipsearch."""
    text = resources.files("clipsearch").joinpath("data/tag_parents.txt").read_text("utf-8")
    return TagTree(parse(text))
