"""The whole words a model's tokenizer knows: the relevance check's test of whether a
query is in a language (or a spelling) the text tower can read at all."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def bpe_words(tokens: Iterable[str]) -> frozenset[str]:
    """Lower-cased whole words of a CLIP BPE vocabulary: its `word</w>` entries."""
    return frozenset(t[:-4].lower() for t in tokens if t.endswith("</w>"))


def vocabulary_words(tokens: Iterable[str]) -> frozenset[str]:
    """Lower-cased whole words of a Hugging Face vocabulary: WordPiece without its `##`
    pieces, SentencePiece `▁word` and byte-level `Ġword` pieces without their marks."""
    words = (
        t.removeprefix("▁").removeprefix("Ġ").lower() for t in tokens if not t.startswith("##")
    )
    return frozenset(w for w in words if w)


def whole_words(tokenizer: Any) -> frozenset[str] | None:
    """Lower-cased whole words of an open_clip tokenizer (CLIP's BPE, a Hugging Face
    tokenizer); None when the tokenizer's vocabulary cannot be read."""
    inner = getattr(tokenizer, "inner", tokenizer)  # clipsearch-mini's trimming wrapper
    encoder = getattr(inner, "encoder", None)
    if isinstance(encoder, dict):  # open_clip's SimpleTokenizer (CLIP BPE)
        return bpe_words(encoder)
    hf = getattr(inner, "tokenizer", None)
    get_vocab = getattr(hf, "get_vocab", None)
    if get_vocab is None:
        return None
    return vocabulary_words(get_vocab())
