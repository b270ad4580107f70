"""Tokenizers without torch: CLIP's byte-level BPE, and Hugging Face's fast tokenizers for
WordPiece/SentencePiece text towers. Both give the token ids open_clip's tokenizers give
(tests compare them), from files the export writes beside the model.
"""

from __future__ import annotations

import functools
import html
import itertools
import json
import re
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from clipsearch.models.words import bpe_words, vocabulary_words

Tokens = np.ndarray[Any, np.dtype[np.int64]]


class Tokenizer(Protocol):
    def __call__(self, texts: list[str]) -> Tokens: ...

    def whole_words(self) -> frozenset[str]: ...


#: Text ftfy leaves as it is: printable ASCII without HTML entities (importing ftfy costs
#: 50 ms of a query's start-up, so it is imported only for other text).
_PLAIN = re.compile(r"[ -%'-~]*")


def clean(text: str, lower: bool) -> str:
    """open_clip's cleaning: mojibake repair (ftfy, when installed), HTML entities, runs of
    whitespace; lower case for CLIP's BPE."""
    if not _PLAIN.fullmatch(text):
        try:
            import ftfy

            text = ftfy.fix_text(text)
        except ImportError:
            pass
    text = " ".join(html.unescape(html.unescape(text)).split())
    return text.lower() if lower else text


@functools.cache
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters: printable Latin-1
    bytes stand for themselves, the others are shifted above 255."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    table, shift = {}, 0
    for byte in range(256):
        if byte in keep:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + shift)
            shift += 1
    return table


class ClipBpe:
    """CLIP's tokenizer: lower-cased, split into words, bytes mapped to characters, merged by
    rank; `<start_of_text>` ... `<end_of_text>`, zero padded to the context length."""

    def __init__(self, vocab: list[str], merges: list[list[str]], context_length: int) -> None:
        import regex

        self.ids = {token: i for i, token in enumerate(vocab)}
        self.ranks = {(a, b): i for i, (a, b) in enumerate(merges)}
        self.context_length = context_length
        self.sot, self.eot = self.ids["<start_of_text>"], self.ids["<end_of_text>"]
        self.pattern = regex.compile(
            r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"
            r"|[^\s\p{L}\p{N}]+",
            regex.IGNORECASE,
        )
        self.byte_chars = _bytes_to_unicode()
        self.cache: dict[str, list[int]] = {}

    @classmethod
    def load(cls, path: Path, context_length: int) -> ClipBpe:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(data["vocab"], data["merges"], context_length)

    def merge(self, word: str) -> list[int]:
        """The ids of one pre-split word, merging its most highly ranked pair first."""
        found = self.cache.get(word)
        if found is not None:
            return found
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = set(itertools.pairwise(parts))
            best = min(pairs, key=lambda pair: self.ranks.get(pair, len(self.ranks)))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        ids = [self.ids[p] for p in parts]
        self.cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in self.pattern.findall(clean(text, lower=True)):
            if word in ("<start_of_text>", "<end_of_text>"):
                ids.append(self.ids[word])
                continue
            ids += self.merge("".join(self.byte_chars[b] for b in word.encode("utf-8")))
        return ids

    def __call__(self, texts: list[str]) -> Tokens:
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot, *self.encode(text), self.eot][: self.context_length]
            ids[-1] = self.eot
            out[row, : len(ids)] = ids
        return out

    def whole_words(self) -> frozenset[str]:
        return bpe_words(self.ids)


class HuggingFaceTokens:
    """A `tokenizer.json` through the `tokenizers` library, truncated at the context length
    and padded only as far as the longest text in the batch (the text tower masks padding)."""

    def __init__(self, path: Path, context_length: int, pad_id: int) -> None:
        self.path = path
        self.context_length = context_length
        self.pad_id = pad_id
        # One tokenizer per thread: a Rust tokenizer shared by threads can fail ("Already
        # borrowed", huggingface/tokenizers #537), and a server's threads shared one when
        # its text queries hung (issue 28). Loading one takes milliseconds.
        self._per_thread = threading.local()
        self.inner = self._per_thread.inner = self._load()  # the creating thread's

    def _load(self) -> Any:
        from tokenizers import Tokenizer as FastTokenizer

        inner = FastTokenizer.from_file(str(self.path))
        inner.no_padding()
        inner.enable_truncation(self.context_length)
        return inner

    def _mine(self) -> Any:
        inner = getattr(self._per_thread, "inner", None)
        if inner is None:
            inner = self._per_thread.inner = self._load()
        return inner

    def __call__(self, texts: list[str]) -> Tokens:
        encoded = self._mine().encode_batch([clean(t, lower=False) for t in texts])
        width = max((len(e.ids) for e in encoded), default=1)
        out = np.full((len(texts), max(1, width)), self.pad_id, dtype=np.int64)
        for row, e in enumerate(encoded):
            out[row, : len(e.ids)] = e.ids
        return out

    def whole_words(self) -> frozenset[str]:
        return vocabulary_words(self.inner.get_vocab())


def load_tokenizer(folder: Path, meta: dict[str, Any]) -> Tokenizer:
    """The tokenizer an export's `meta.json` names, from the files beside it."""
    kind, length = meta["kind"], int(meta["context_length"])
    if kind == "clip-bpe":
        return ClipBpe.load(folder / "bpe.json", length)
    return HuggingFaceTokens(folder / "tokenizer.json", length, int(meta["pad_id"]))
