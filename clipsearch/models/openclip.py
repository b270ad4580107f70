"""The open_clip implementation of the `Encoder` protocol."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import open_clip
import torch

from clipsearch.errors import ModelLoadError, ModelSpecError
from clipsearch.models import hub
from clipsearch.models.clip_encoder import ClipEncoder
from clipsearch.models.quiet import quiet_logger
from clipsearch.models.spec import CONFIG_DIR, ModelSpec, unknown_architecture

_registered = False
_TEXT_BATCH = 256


def register_configs() -> None:
    """Make our own architectures (e.g. `clipsearch-tiny`) known to open_clip, once."""
    global _registered
    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but torch sees no CUDA GPU here")
    return resolved


def _build(spec: ModelSpec, device: torch.device) -> tuple[Any, Any]:
    register_configs()
    is_schema = spec.arch.startswith(("hf-hub:", "local-dir:"))
    if not is_schema and spec.arch not in open_clip.list_models():
        raise ModelSpecError(unknown_architecture(spec.arch))
    if spec.weights and not spec.is_local_file:
        tags = open_clip.list_pretrained_tags_by_model(spec.arch)
        if spec.weights not in tags:
            raise ModelSpecError(
                f"{spec.arch} has no published weights {spec.weights!r}; known tags: "
                f"{', '.join(tags) or 'none'}; or give a local checkpoint path"
            )
    if spec.is_local_file and not Path(spec.weights or "").is_file():
        raise ModelLoadError(f"checkpoint file not found: {spec.weights}")
    if spec.weights and not spec.is_local_file:
        hf_hub = open_clip.get_pretrained_cfg(spec.arch, spec.weights).get("hf_hub")
        if hf_hub and not hub.is_cached(hf_hub):
            reason = hub.unreachable_reason()
            if reason:
                raise ModelLoadError(
                    _load_failure_message(spec, f"not in the local cache and {reason}")
                )
    try:
        with contextlib.ExitStack() as stack:
            # open_clip logs to the root logger: "No pretrained weights loaded" (for our
            # seeded built-ins, random weights are the point) and download failures, which
            # are re-raised below with a message that says what to do.
            stack.enter_context(quiet_logger(None, logging.CRITICAL))
            if spec.seed is not None:
                stack.enter_context(torch.random.fork_rng(devices=[]))
                torch.manual_seed(spec.seed)
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.arch, pretrained=spec.weights, device=device
            )
    except Exception as exc:  # torch.load and the hub raise many types; all mean "not loaded"
        raise ModelLoadError(_load_failure_message(spec, exc)) from exc
    return model, preprocess


def _load_failure_message(spec: ModelSpec, exc: BaseException | str) -> str:
    if spec.is_local_file:
        return (
            f"could not load checkpoint {spec.weights} into {spec.arch}: {str(exc).rstrip('.')}. "
            "Check that the file is an open_clip/OpenAI CLIP state dict for this architecture."
        )
    return (
        f"could not load the weights for {spec.text!r}: {str(exc).rstrip('.')}. "
        "clipsearch downloads published weights once from the Hugging Face hub into its cache; "
        "on a machine without internet, download the checkpoint elsewhere (e.g. "
        "open_clip_pytorch_model.bin from the model's hub page) and pass "
        f"--model {spec.arch}:/path/to/that/file"
    )


def load_open_clip(spec: ModelSpec, device: torch.device) -> ClipEncoder:
    """An open_clip model in inference mode, with its own preprocessing and tokenizer."""
    model, preprocess = _build(spec, device)
    size = model.visual.image_size
    return ClipEncoder(
        model,
        preprocess,
        open_clip.get_tokenizer(spec.arch),
        input_size=int(size[0] if isinstance(size, tuple | list) else size),
        spec=spec.text,
        identity=spec.identity,
        device=device,
    )
