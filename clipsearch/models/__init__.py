"""Models: the encoder protocol, the registry of loaders, spec parsing, and the built-ins
(open_clip architectures, clipsearch-mini, tiny-random), registered like any plugin.

Importing this package does not import torch; loading an encoder does.
"""

from __future__ import annotations

from clipsearch.errors import ModelSpecError
from clipsearch.models.base import Encoder, ModelInfo
from clipsearch.models.registry import find, register_encoder, registrations, set_fallback
from clipsearch.models.runtime.choice import RuntimeChoice
from clipsearch.models.spec import BUILTINS, DEFAULT_MODEL, MINI_ARCH, ModelSpec, parse_model_spec

__all__ = [
    "BUILTINS",
    "DEFAULT_MODEL",
    "Encoder",
    "ModelInfo",
    "ModelSpec",
    "RuntimeChoice",
    "load_encoder",
    "model_identity",
    "parse_model_spec",
    "register_encoder",
    "registrations",
]


def load_encoder(
    spec: str | ModelSpec, device: str | None = None, runtime: RuntimeChoice | None = None
) -> Encoder:
    """Build the encoder a spec names, through the loader registered for it (downloading
    published weights once if needed), run by the runtime `runtime` chooses (default: auto,
    see `clipsearch.models.runtime.load`). Plugins' encoders run as their loader builds them."""
    text = spec.text if isinstance(spec, ModelSpec) else spec.strip()
    registration = find(text)
    choice = runtime or RuntimeChoice()
    if registration.loader is not _load_builtin:
        if choice.runtime not in ("auto", "torch") or choice.precision not in ("fp32", "auto"):
            raise ModelSpecError(
                f"the model {text!r} comes from {registration.origin}, which runs it itself: "
                "use --runtime torch (or auto) and --precision fp32"
            )
        return registration.loader(text, device)
    from clipsearch.models.runtime.load import load_with_runtime

    return load_with_runtime(
        text,
        lambda: registration.identity_of(text),
        choice,
        device,
        lambda: _load_builtin(text, device),
    )


def model_identity(spec: str) -> str:
    """What an index built with `spec` records as its model, without loading the model."""
    text = spec.strip()
    return find(text).identity_of(text)


def _spec_identity(spec: str) -> str:
    return parse_model_spec(spec).identity


def _load_builtin(spec: str, device: str | None) -> Encoder:
    from clipsearch._malloc import keep_freed_memory
    from clipsearch.models.openclip import load_open_clip, resolve_device

    keep_freed_memory()
    parsed = parse_model_spec(spec)
    resolved = resolve_device(device)
    if parsed.arch == MINI_ARCH:
        from clipsearch.models.mini import load_mini

        return load_mini(parsed, resolved)
    return load_open_clip(parsed, resolved)


for _name in BUILTINS:
    register_encoder(_name, _load_builtin, identity=_spec_identity)
set_fallback(_load_builtin, _spec_identity)
