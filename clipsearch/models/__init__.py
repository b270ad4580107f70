"""Models: the encoder protocol, spec parsing and the open_clip implementation.

Importing this package does not import torch; `load_encoder` does.
"""

from __future__ import annotations

from clipsearch.models.base import Encoder, ModelInfo
from clipsearch.models.spec import BUILTINS, DEFAULT_MODEL, MINI_ARCH, ModelSpec, parse_model_spec

__all__ = [
    "BUILTINS",
    "DEFAULT_MODEL",
    "Encoder",
    "ModelInfo",
    "ModelSpec",
    "load_encoder",
    "parse_model_spec",
]


def load_encoder(spec: str | ModelSpec, device: str | None = None) -> Encoder:
    """Build the encoder a spec names (downloading published weights once if needed)."""
    from clipsearch._malloc import keep_freed_memory
    from clipsearch.models.openclip import load_open_clip, resolve_device

    keep_freed_memory()
    parsed = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec)
    resolved = resolve_device(device)
    if parsed.arch == MINI_ARCH:
        from clipsearch.models.mini import load_mini

        return load_mini(parsed, resolved)
    return load_open_clip(parsed, resolved)
