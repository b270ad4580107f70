"""Build the encoder a runtime choice asks for: torch itself, or an export run by ONNX
Runtime or OpenVINO (exported first, through torch, when the cache has none).

`auto` is decided by measurement, once per model and machine: when a model is exported, its
image tower is timed under each installed runtime (torch included, as it is loaded then),
and the fastest wins; torch only when it beats the best optimised runtime by more than
`TORCH_MARGIN`, since the optimised runtimes start without importing torch. The figures are
kept in the export folder (`choice.json`) and measured again on another machine or after an
upgrade. With an NVIDIA GPU present, auto is torch (CUDA, fp16).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from clipsearch.errors import ModelLoadError, ModelSpecError
from clipsearch.models.base import Encoder
from clipsearch.models.runtime.choice import RuntimeChoice
from clipsearch.models.runtime.export import export_folder, export_model, read_meta
from clipsearch.models.runtime.machine import RUNTIME_MODULES, machine

log = logging.getLogger(__name__)

TORCH_MARGIN = 0.05
#: What `choice.json`'s figures were measured as; figures of another method are measured
#: again (2: OpenVINO in f32 on every CPU, where it had run bf16 on AVX512_BF16 ones).
METHOD = 2
OPTIMISED = ("onnx", "openvino")
TorchLoader = Callable[[], Encoder]


def installed(runtime: str) -> bool:
    return importlib.util.find_spec(RUNTIME_MODULES[runtime]) is not None


def require_torch(feature: str) -> None:
    """A clear error where `feature` needs torch and this is a lean install without it."""
    if not installed("torch"):
        raise ModelLoadError(
            f"{feature} needs torch, which this lean install of clipsearch leaves out; "
            "install the full clipsearch (pip install clipsearch) for it"
        )


def gpu_present() -> bool:
    """An NVIDIA driver is loaded (read without importing torch)."""
    return os.path.exists("/proc/driver/nvidia/version")


def load_with_runtime(
    spec: str,
    identity_of: Callable[[], str],
    choice: RuntimeChoice,
    device: str | None,
    torch_encoder: TorchLoader,
) -> Encoder:
    """The encoder for `spec` under `choice`; `identity_of()` gives the model's identity (a
    missing checkpoint fails there), `torch_encoder()` builds the torch encoder."""
    runtime = choice.runtime
    export: tuple[Path, dict[str, Any]] | None = None
    if runtime == "auto":
        try:
            identity = identity_of()
        except ModelSpecError:
            require_torch(f"the model {spec!r}")
            return torch_encoder()  # which says precisely what is wrong with the spec
        runtime, export = _auto_runtime(identity, device, torch_encoder)
    if runtime == "torch":
        require_torch("--runtime torch")
        return torch_encoder()
    if device not in (None, "", "auto", "cpu"):
        raise ModelLoadError(
            f"--runtime {runtime} runs on the CPU; for --device {device} use --runtime torch"
        )
    if not installed(runtime):
        package = "onnxruntime" if runtime == "onnx" else "'clipsearch[openvino]'"
        raise ModelLoadError(
            f"--runtime {runtime} is not installed: pip install {package}, or use --runtime torch"
        )
    from clipsearch._malloc import keep_freed_memory
    from clipsearch.models.runtime.encoder import ExportedEncoder

    keep_freed_memory()  # the runtimes' activation buffers too, see clipsearch/_malloc.py
    folder, meta = export or ensure_export(identity_of(), torch_encoder)
    precision = choice.precision
    if precision == "auto" and runtime != "onnx":
        precision = "fp32"  # int8 is chosen automatically only where it measured well: ONNX
    return ExportedEncoder(folder, meta, spec, runtime, precision)


def ensure_export(identity: str, torch_encoder: TorchLoader) -> tuple[Path, dict[str, Any]]:
    """The export folder of the model and its meta, exporting through torch if needed."""
    folder = export_folder(identity)
    meta = read_meta(folder)
    if meta is not None:
        return folder, meta
    if not installed("torch"):
        raise ModelLoadError(
            f"the model {identity!r} has not been exported for the optimised runtimes on this "
            f"machine (looked in {folder}), and exporting needs torch, which this lean install "
            "leaves out: run any command with this model once on a full install (pip install "
            "clipsearch) and copy that folder here, or point CLIPSEARCH_MODEL_CACHE at a copy"
        )
    log.warning("exporting %s for the optimised runtimes (once; kept in %s)", identity, folder)
    encoder = torch_encoder()
    meta = export_model(encoder, folder)
    _measure(folder, meta, encoder)
    return folder, meta


def _auto_runtime(
    identity: str, device: str | None, torch_encoder: TorchLoader
) -> tuple[str, tuple[Path, dict[str, Any]] | None]:
    """The runtime `auto` stands for here, with the export it looked at (None: torch
    decided without one)."""
    if device not in (None, "", "auto", "cpu") or (device != "cpu" and gpu_present()):
        return "torch", None
    candidates = [r for r in OPTIMISED if installed(r)]
    if not candidates:
        return "torch", None
    folder, meta = ensure_export(identity, torch_encoder)
    figures = _measured(folder) or _measure(folder, meta, None)
    best = max((r for r in candidates if r in figures), key=figures.__getitem__, default=None)
    if best is None or figures.get("torch", 0.0) > figures[best] * (1 + TORCH_MARGIN):
        return "torch", (folder, meta)
    return best, (folder, meta)


def _measured(folder: Path) -> dict[str, float] | None:
    try:
        data = json.loads((folder / "choice.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("machine") != machine() or data.get("method") != METHOD:
        return None
    return {str(k): float(v) for k, v in data["images_per_second"].items()}


def _measure(folder: Path, meta: dict[str, Any], torch_model: Encoder | None) -> dict[str, float]:
    """Image-tower throughput (images/s, batch 16, best of 3) of each installed runtime, and
    of torch when its encoder is at hand; kept in `choice.json`."""
    from clipsearch.models.runtime.encoder import ExportedEncoder

    size = int(meta["pixels"]["size"])
    batch = np.random.default_rng(0).standard_normal((16, 3, size, size)).astype(np.float32)
    runs: dict[str, Callable[[], Any]] = {}
    for runtime in OPTIMISED:
        if installed(runtime):
            tower = ExportedEncoder(folder, meta, "", runtime, "fp32").image_tower(batch)
            runs[runtime] = functools.partial(tower, batch)
    if torch_model is not None:
        import torch

        runs["torch"] = functools.partial(torch_model.encode_images, torch.from_numpy(batch))
    figures = {}
    for runtime, run in runs.items():
        run()  # warm up
        best = min(_timed(run) for _ in range(3))
        figures[runtime] = round(len(batch) / best, 2)
    record = {"machine": machine(), "method": METHOD, "images_per_second": figures}
    (folder / "choice.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    log.info("measured image-tower speed of the runtimes: %s", figures)
    return figures


def _timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started
