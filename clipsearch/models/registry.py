"""The model registry: which loader builds the encoder a `--model` spec names.

A loader is registered for a prefix: it serves the spec equal to the prefix and every spec
`PREFIX:...`. The built-ins register here like any plugin (`clipsearch-mini`, `tiny-random`,
and open_clip as the fallback for every other spec, `ARCH:TAG`). A package adds its own
models through the entry-point group `clipsearch.encoders`:

    [project.entry-points."clipsearch.encoders"]
    colour-hist = "colour_hist_plugin:load"

The entry point's name is the prefix; its object is the loader, called as
`loader(spec, device)` and returning an `Encoder`. An index records the identity of the
model it was built with and compares it on every open, before loading anything: a loader's
optional `identity(spec) -> str` attribute gives it (by default the spec itself, which must
then be the `info.identity` the encoder reports). Nothing is imported until a spec needs it.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass

from clipsearch.errors import ModelLoadError, ModelSpecError
from clipsearch.models.base import Encoder

ENTRY_POINT_GROUP = "clipsearch.encoders"
Loader = Callable[[str, "str | None"], Encoder]


@dataclass(frozen=True)
class Registration:
    prefix: str
    loader: Loader
    identity: Callable[[str], str] | None = None
    origin: str = "built in"  # or the distribution that registered it

    def identity_of(self, spec: str) -> str:
        return self.identity(spec) if self.identity is not None else spec


_registered: dict[str, Registration] = {}
_fallback: Registration | None = None
_plugins_loaded = False


def register_encoder(
    prefix: str,
    loader: Loader,
    *,
    identity: Callable[[str], str] | None = None,
    origin: str = "built in",
) -> None:
    """Serve `prefix` and `prefix:...` specs with `loader(spec, device)`. `identity(spec)`:
    what the index records for the spec (default: the spec)."""
    if not prefix or prefix != prefix.strip() or ":" in prefix:
        raise ModelSpecError(f"an encoder prefix is a non-empty name without ':', not {prefix!r}")
    _registered[prefix] = Registration(prefix, loader, identity, origin)


def set_fallback(loader: Loader, identity: Callable[[str], str]) -> None:
    """The loader for specs no prefix claims (open_clip's `ARCH:TAG`)."""
    global _fallback
    _fallback = Registration("", loader, identity)


def registrations() -> dict[str, Registration]:
    """Every registered prefix, plugins included."""
    _load_plugins()
    return dict(_registered)


def find(spec: str) -> Registration:
    """The registration serving `spec`: its own prefix, else the fallback."""
    _load_plugins()
    head = spec.split(":", 1)[0]
    found = _registered.get(spec) or _registered.get(head)
    if found is not None:
        return found
    if _fallback is None:
        raise ModelSpecError(f"no encoder is registered for model spec {spec!r}")
    return _fallback


def _load_plugins() -> None:
    """Register every `clipsearch.encoders` entry point once; a broken plugin is reported
    when its prefix is used, not when another model is."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        origin = f"plugin {entry.value} ({entry.dist.name if entry.dist else 'unknown'})"
        if entry.name in _registered:
            continue  # a built-in name is never taken over
        register_encoder(
            entry.name, _deferred(entry), identity=_deferred_identity(entry), origin=origin
        )


def _deferred(entry: importlib.metadata.EntryPoint) -> Loader:
    def load(spec: str, device: str | None) -> Encoder:
        encoder: Encoder = _plugin_object(entry)(spec, device)
        return encoder

    return load


def _deferred_identity(entry: importlib.metadata.EntryPoint) -> Callable[[str], str]:
    def identity(spec: str) -> str:
        custom = getattr(_plugin_object(entry), "identity", None)
        return str(custom(spec)) if callable(custom) else spec

    return identity


def _plugin_object(entry: importlib.metadata.EntryPoint) -> Loader:
    try:
        loader: Loader = entry.load()
    except Exception as exc:
        raise ModelLoadError(
            f"the encoder plugin {entry.value!r} for {entry.name!r} models failed to load "
            f"({type(exc).__name__}: {exc}); reinstall it or uninstall it"
        ) from exc
    if not callable(loader):
        raise ModelLoadError(f"the encoder plugin {entry.value!r} is not a loader function")
    return loader
