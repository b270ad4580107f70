"""A query's words for the keyword index: "quoted phrases" (which must match as phrases) and
the other words, English stop words left out, as SQLite FTS5 expressions."""

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


def _quoted(words: str) -> str:
    return '"' + words.replace('"', '""') + '"'


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

    def required(self) -> str | None:
        """The FTS5 expression every keyword hit must match: all its phrases (None: none)."""
        return " AND ".join(_quoted(p) for p in self.phrases) or None

    def ranked(self) -> str | None:
        """The FTS5 expression a keyword search ranks by: any of the terms, and every
        phrase (None for a query with no words)."""
        any_term = " OR ".join(_quoted(t) for t in self.terms)
        required = self.required()
        if required and any_term:
            return f"{required} AND ({any_term})"
        return required or any_term or None

    def semantic_text(self, text: str) -> str:
        """The words the model reads: the query with its quote marks taken out."""
        return " ".join(text.replace('"', " ").split())

    @staticmethod
    def part_expression(part: str) -> str:
        return _quoted(part)
