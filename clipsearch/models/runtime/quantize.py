"""int8 versions of an exported image tower, made once beside the fp32 export.

ONNX Runtime: dynamic quantisation (int8 weights, activations quantised per batch at run
time), which needs no calibration photos; on AVX2 CPUs without VNNI its int8 matrix
products are where the speed comes from (benchmarks/results/runtimes.md).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from clipsearch.errors import ModelLoadError


def int8_path(folder: Path, runtime: str) -> Path:
    return folder / f"image.int8-{runtime}.onnx"


def quantized_image_tower(folder: Path, runtime: str) -> Path:
    """The int8 image tower for `runtime`, quantising the fp32 one on first use."""
    target = int8_path(folder, runtime)
    if target.is_file():
        return target
    if runtime != "onnx":
        raise ModelLoadError(
            f"int8 is not available for --runtime {runtime} yet; use --runtime onnx "
            "--precision int8, or --precision fp32"
        )
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise ModelLoadError(
            "--precision int8 needs ONNX Runtime's quantisation tools: pip install onnxruntime onnx"
        ) from exc
    handle, scratch = tempfile.mkstemp(suffix=".onnx", dir=folder)
    os.close(handle)
    try:
        quantize_dynamic(folder / "image.onnx", scratch, weight_type=QuantType.QInt8)
        os.replace(scratch, target)
    finally:
        Path(scratch).unlink(missing_ok=True)
    return target
