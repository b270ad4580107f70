"""Parse `--model` specs into what to build and what to record in the index.

A spec is one of:

- a built-in name (`tiny-random`), see `BUILTINS`;
- `ARCH:TAG`, an open_clip architecture with a published weights tag
  (`ViT-B-32:laion2b_s34b_b79k`), downloaded once through open_clip's hub loader;
- `ARCH:/path/to/checkpoint.pt`, the same architecture with weights from a local file;
- `hf-hub:org/repo` or `local-dir:/path`, open_clip's own schemes, passed through;
- a bare `ARCH`, random weights (useful only for speed measurements).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

from clipsearch.errors import ModelSpecError

#: The default for real use: ViT-B-32 trained on LAION-2B. Among the CLIP models that run at
#: usable speed on a laptop CPU (~15 images/s on 2 cores) it has the best zero-shot retrieval
#: scores in open_clip's published results (better than OpenAI's own ViT-B-32 weights).
DEFAULT_MODEL = "ViT-B-32:laion2b_s34b_b79k"


#: The shipped weights of the offline reference model (see clipsearch/models/mini.py).
MINI_ARCH = "clipsearch-mini"
MINI_CHECKPOINT = Path(__file__).parent / "weights" / "clipsearch-mini.pt"


@dataclass(frozen=True)
class Builtin:
    arch: str
    description: str
    seed: int | None = None  # random init with this seed
    weights: str | None = None  # or these weights


BUILTINS: dict[str, Builtin] = {
    "clipsearch-mini": Builtin(
        arch=MINI_ARCH,
        weights=str(MINI_CHECKPOINT),
        description=(
            "the offline reference model: a small CNN image tower trained by this project "
            "against the locked all-MiniLM-L6-v2 text tower; real signal, ships with the package"
        ),
    ),
    "tiny-random": Builtin(
        arch="clipsearch-tiny",
        seed=0,
        description=(
            "a 3.4M-parameter open_clip ViT with a fixed-seed random init: deterministic and "
            "fast, for tests and smoke runs; its search results are meaningless"
        ),
    ),
}

_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec. `identity` is what the index records and compares on reopen."""

    text: str
    arch: str
    weights: str | None
    seed: int | None = None

    @property
    def is_local_file(self) -> bool:
        return self.weights is not None and _looks_like_path(self.weights)

    @cached_property
    def identity(self) -> str:
        if self.seed is not None:
            return f"{self.arch}:random-seed{self.seed}"
        if self.weights is None:
            return f"{self.arch}:unseeded-random"
        if self.is_local_file:
            return f"{self.arch}:file-{checkpoint_fingerprint(Path(self.weights))}"
        return f"{self.arch}:{self.weights}"


def _looks_like_path(value: str) -> bool:
    return (
        "/" in value
        or os.sep in value
        or value.startswith((".", "~"))
        or value.lower().endswith(_WEIGHT_SUFFIXES)
    )


def parse_model_spec(text: str) -> ModelSpec:
    text = text.strip()
    if not text:
        raise ModelSpecError("empty model spec; try e.g. 'tiny-random' or 'ViT-B-32:openai'")
    if text in BUILTINS:
        builtin = BUILTINS[text]
        return ModelSpec(text=text, arch=builtin.arch, weights=builtin.weights, seed=builtin.seed)
    if text.startswith(("hf-hub:", "local-dir:")):
        return ModelSpec(text=text, arch=text, weights=None)
    arch, sep, weights = text.partition(":")
    if not arch:
        raise ModelSpecError(f"model spec {text!r} has no architecture before ':'")
    architectures = known_architectures()
    if architectures and arch not in architectures and not _added_to_open_clip(arch):
        raise ModelSpecError(unknown_architecture(arch))
    if sep and not weights:
        raise ModelSpecError(f"model spec {text!r} has ':' but no weights after it")
    if weights and _looks_like_path(weights):
        weights = str(Path(weights).expanduser().resolve())
    return ModelSpec(text=text, arch=arch, weights=weights or None)


#: Where clipsearch keeps the open_clip configs of its own architectures.
CONFIG_DIR = Path(__file__).parent / "configs"


@cache
def known_architectures() -> frozenset[str]:
    """The architectures a spec may name: open_clip's model configs and clipsearch's own,
    read from their folders (open_clip, and torch with it, is not imported). Empty when
    open_clip is not installed (loading then says so)."""
    found = importlib.util.find_spec("open_clip")
    if found is None or found.origin is None:
        return frozenset()
    folders = [Path(found.origin).parent / "model_configs", CONFIG_DIR]
    return frozenset(p.stem for folder in folders for p in folder.glob("*.json")) | {MINI_ARCH}


def _added_to_open_clip(arch: str) -> bool:
    """Whether an open_clip already imported knows `arch` from a config added at run time
    (`open_clip.add_model_config`); open_clip is not imported to ask."""
    open_clip = sys.modules.get("open_clip")
    return open_clip is not None and arch in open_clip.list_models()


def unknown_architecture(arch: str) -> str:
    """The message for a spec whose architecture nobody knows, with the nearest names."""
    names = sorted({*BUILTINS, *known_architectures()})
    near = difflib.get_close_matches(arch, names, n=3, cutoff=0.6)
    lowered = {n.lower(): n for n in names}
    if arch.lower() in lowered and lowered[arch.lower()] not in near:
        near.insert(0, lowered[arch.lower()])
    hint = f"did you mean {' or '.join(repr(n) for n in near)}? " if near else ""
    return (
        f"unknown model {arch!r}: no installed plugin serves it (install the package that "
        "provides it: its entry point in the group 'clipsearch.encoders'), and it is neither "
        f"a built-in model nor an open_clip architecture; {hint}built in: "
        f"{', '.join(sorted(BUILTINS))}; open_clip: ARCH or ARCH:TAG, e.g. "
        "'ViT-B-32:laion2b_s34b_b79k' (run `python -c 'import open_clip; "
        "print(open_clip.list_models())'` for all)"
    )


def checkpoint_fingerprint(path: Path) -> str:
    """A cheap content fingerprint of a checkpoint: size plus the first and last MiB.

    Hashing a 600 MB file on every open would cost a second; this tells checkpoints apart
    (their headers and tails differ) while letting the same file move on disk.
    """
    try:
        size = path.stat().st_size
        digest = hashlib.sha256(str(size).encode())
        with path.open("rb") as f:
            digest.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(-(1 << 20), os.SEEK_END)
                digest.update(f.read(1 << 20))
    except OSError as exc:
        raise ModelSpecError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    return "sha256-" + digest.hexdigest()[:16]
