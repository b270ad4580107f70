"""The whole words a model's tokenizer knows: the relevance check's test of whether a
query is in a language (or a spelling) the text tower can read at all."""

from __future__ import annotations

from typing import Any


def whole_words(tokenizer: Any) -> frozenset[str] | None:
    """Lower-cased whole words of an open_clip tokenizer (CLIP's BPE `word</w>` entries, a
    Hugging Face WordPiece vocabulary without its `##` pieces, SentencePiece `▁word`
    pieces); None when the tokenizer's vocabulary cannot be read."""
    inner = getattr(tokenizer, "inner", tokenizer)  # clipsearch-mini's trimming wrapper
    encoder = getattr(inner, "encoder", None)
    if isinstance(encoder, dict):  # open_clip's SimpleTokenizer (CLIP BPE)
        return frozenset(t[:-4].lower() for t in encoder if t.endswith("</w>"))
    hf = getattr(inner, "tokenizer", None)
    get_vocab = getattr(hf, "get_vocab", None)
    if get_vocab is None:
        return None
    words = set()
    for token in get_vocab():
        if token.startswith("##"):
            continue
        words.add(token.removeprefix("▁").removeprefix("Ġ").lower())
    return frozenset(w for w in words if w)
