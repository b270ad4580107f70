"""Export a torch model's two towers to ONNX, once, into the user's cache folder.

The folder is keyed by the model's identity (architecture + weights fingerprint) and the
export format, so a retrained checkpoint or a new format gets a new export and an unchanged
model reuses the old one. It holds `image.onnx`, `text.onnx`, the tokenizer's files and
`meta.json` (dimension, preprocessing, tokenizer), everything a runtime needs without torch.
Exporting needs torch and open_clip; loading an export does not.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clipsearch.errors import ModelLoadError
from clipsearch.user_dirs import user_cache

#: Bumped when what an export holds changes; old exports are then made again (2: the
#: model's trained logit scale).
EXPORT_FORMAT = 2
META = "meta.json"


def models_cache() -> Path:
    """`$CLIPSEARCH_MODEL_CACHE`, else `$XDG_CACHE_HOME/clipsearch/models`."""
    return user_cache("CLIPSEARCH_MODEL_CACHE", "models")


def export_folder(identity: str) -> Path:
    """Where the export of the model with this identity lives (it may not exist yet)."""
    digest = hashlib.sha256(f"{identity}\0{EXPORT_FORMAT}".encode()).hexdigest()[:16]
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in identity.split(":")[0])
    return models_cache() / f"{readable[:40]}-{digest}"


def read_meta(folder: Path) -> dict[str, Any] | None:
    """An export's description, or None when the folder holds no finished export."""
    try:
        meta: dict[str, Any] = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if meta.get("format") == EXPORT_FORMAT else None


def export_model(encoder: Any, folder: Path) -> dict[str, Any]:
    """Write `encoder`'s towers (a `ClipEncoder`) to `folder`, atomically: a half-written
    export is never seen, and two processes exporting at once both end with a whole one."""
    from clipsearch.models.runtime.pixels import read_transforms

    pixels = read_transforms(encoder.preprocess)  # fails early for unsupported models
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        tokenizer = _write_tokenizer(encoder.tokenizer, work)
        _export_towers(encoder, work, pixels.size, tokenizer)
        meta = {
            "format": EXPORT_FORMAT,
            "identity": encoder.info.identity,
            "spec": encoder.info.spec,
            "dim": encoder.info.dim,
            "input_size": encoder.input_size,
            "pixels": pixels.to_dict(),
            "tokenizer": tokenizer,
            "logit_scale": getattr(encoder, "logit_scale", None),
        }
        (work / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        try:
            os.replace(work, folder)
        except OSError:
            if read_meta(folder) is None:  # not another process's finished export
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    found = read_meta(folder)
    assert found is not None
    return found


def _write_tokenizer(tokenizer: Any, folder: Path) -> dict[str, Any]:
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    inner = getattr(tokenizer, "inner", tokenizer)  # clipsearch-mini's trimming wrapper
    if isinstance(inner, SimpleTokenizer) and inner.reduction_fn is None:
        vocab = sorted(inner.encoder, key=inner.encoder.__getitem__)
        merges = sorted(inner.bpe_ranks, key=inner.bpe_ranks.__getitem__)
        data = {"vocab": vocab, "merges": [list(m) for m in merges]}
        (folder / "bpe.json").write_text(json.dumps(data), encoding="utf-8")
        return {"kind": "clip-bpe", "context_length": inner.context_length}
    if (
        isinstance(inner, HFTokenizer)
        and not inner.strip_sep_token
        and not getattr(inner, "tokenizer_mode", "")
        and getattr(inner.tokenizer, "backend_tokenizer", None) is not None
    ):
        inner.tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
        return {
            "kind": "huggingface",
            "context_length": inner.context_length,
            "pad_id": int(inner.tokenizer.pad_token_id),
        }
    raise ModelLoadError(
        f"this model's tokenizer ({type(inner).__name__}) has no torch-free counterpart in "
        "clipsearch yet; use --runtime torch"
    )


def _export_towers(encoder: Any, folder: Path, size: int, tokenizer: dict[str, Any]) -> None:
    import torch

    model = encoder.model.float().cpu().eval()
    sample_tokens = torch.zeros((2, 8 if tokenizer["kind"] == "huggingface" else
                                 tokenizer["context_length"]), dtype=torch.long)  # fmt: skip
    sample_tokens[:, 0] = 1
    token_axes = {0: "batch", 1: "length"} if tokenizer["kind"] == "huggingface" else {0: "batch"}
    with _quiet_exporter():
        torch.onnx.export(
            _tower(model, "encode_image"), (torch.zeros(2, 3, size, size),),
            str(folder / "image.onnx"), input_names=["pixels"], output_names=["embedding"],
            dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=17, dynamo=False,
        )  # fmt: skip
        torch.onnx.export(
            _tower(model, "encode_text"), (sample_tokens,), str(folder / "text.onnx"),
            input_names=["tokens"], output_names=["embedding"],
            dynamic_axes={"tokens": token_axes, "embedding": {0: "batch"}},
            opset_version=17, dynamo=False,
        )  # fmt: skip
    encoder.model.to(encoder.device)


def _tower(model: Any, method: str) -> Any:
    """One of the model's encode methods as a module of its own, for the exporter."""
    import torch

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return getattr(self.model, method)(x)  # type: ignore[no-any-return]

    return Tower().eval()


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    # The TorchScript exporter warns about its deprecation and about traced shape arithmetic;
    # neither concerns a user, and the parity tests check what comes out.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
