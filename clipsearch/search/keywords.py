"""A query's words for the keyword index: "quoted phrases" (which must match as phrases) and
the other words, English stop words left out."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PHRASE = re.compile(r'"([^"]*)"')
_WORD = re.compile(r"\w+", re.UNICODE)
STOP_WORDS = frozenset([
    "a", "an", "the", "and", "or", "of", "in", "on", "at", "to", "for", "with", "by", "from",
    "into", "onto", "over", "under", "is", "are", "was", "were", "be", "been", "being", "it",
    "its", "this", "that", "these", "those", "there", "here", "some", "any", "his", "her",
    "their", "our", "my", "your", "as", "while", "who", "what", "which", "where", "when",
    "very", "just", "not", "no",
])  # fmt: skip


@dataclass(frozen=True)
class KeywordQuery:
    terms: tuple[str, ...]  # lower-cased words, stop words left out
    phrases: tuple[str, ...]  # each a space-joined run of words

    @classmethod
    def parse(cls, text: str) -> KeywordQuery:
        phrases = []
        for raw in _PHRASE.findall(text):
            words = _WORD.findall(raw.lower())
            if words:
                phrases.append(" ".join(words))
        rest = _PHRASE.sub(" ", text).replace('"', " ")
        words = _WORD.findall(rest.lower())
        terms = [w for w in words if w not in STOP_WORDS] or words
        if phrases and not [w for w in words if w not in STOP_WORDS]:
            terms = []  # a query of phrases and stop words: the phrases say it all
        return cls(tuple(dict.fromkeys(terms)), tuple(dict.fromkeys(phrases)))

    @property
    def empty(self) -> bool:
        return not self.terms and not self.phrases

    @property
    def parts(self) -> tuple[str, ...]:
        """Each thing the query asks for: its terms and its phrases."""
        return self.terms + self.phrases
