"""int8 versions of an exported image tower, made once beside the fp32 export.

- ONNX Runtime: dynamic quantisation (int8 weights, activations quantised per batch at run
  time), which needs no calibration photos.
- OpenVINO: static quantisation with NNCF, calibrated on the first batch of photos the first
  int8 run encodes (the collection's own photos), kept for later runs.

Which is faster, and by how much, is measured in benchmarks/results/runtimes.md.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from clipsearch.errors import ModelLoadError
from clipsearch.models.quiet import quiet_logger

Array = np.ndarray[Any, Any]


def int8_path(folder: Path, runtime: str) -> Path:
    return folder / f"image.int8-{runtime}.{'onnx' if runtime == 'onnx' else 'xml'}"


def quantized_image_tower(folder: Path, runtime: str, sample: Array) -> Path:
    """The int8 image tower for `runtime`, quantising the fp32 one on first use (OpenVINO
    calibrates on `sample`, a batch of preprocessed photos)."""
    target = int8_path(folder, runtime)
    if target.is_file():
        return target
    if runtime == "openvino":
        return _openvino_int8(folder, target, sample)
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise ModelLoadError(
            "--precision int8 needs ONNX Runtime's quantisation tools: pip install onnxruntime onnx"
        ) from exc
    handle, scratch = tempfile.mkstemp(suffix=".onnx", dir=folder)
    os.close(handle)
    try:
        with quiet_logger(None):  # its advice to pre-process the model
            quantize_dynamic(folder / "image.onnx", scratch, weight_type=QuantType.QInt8)
        os.replace(scratch, target)
    finally:
        Path(scratch).unlink(missing_ok=True)
    return target


def _openvino_int8(folder: Path, target: Path, sample: Array) -> Path:
    try:
        import nncf
    except ImportError as exc:
        raise ModelLoadError(
            "--runtime openvino --precision int8 needs NNCF: pip install 'clipsearch[openvino]'"
        ) from exc
    import openvino as ov

    from clipsearch.models.runtime.backends import openvino_core

    model = openvino_core().read_model(str(folder / "image.onnx"))
    attention = any(op.get_type_name() == "Softmax" for op in model.get_ops())
    calibration = nncf.Dataset([sample[i : i + 1] for i in range(len(sample))])
    with quiet_logger("nncf"):  # its statistics and progress bars
        quantized = nncf.quantize(
            model,
            calibration,
            subset_size=len(sample),
            model_type=nncf.ModelType.TRANSFORMER if attention else None,
        )
    scratch = folder / f".int8-{os.getpid()}.xml"
    ov.save_model(quantized, str(scratch))
    os.replace(scratch.with_suffix(".bin"), target.with_suffix(".bin"))
    os.replace(scratch, target)  # the .xml last: its presence means both are whole
    return target
