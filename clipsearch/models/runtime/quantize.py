"""int8 versions of an exported image tower, made once beside the fp32 export.

- ONNX Runtime: dynamic quantisation (int8 weights, activations quantised per batch at run
  time), made twice, with full-range and with 7-bit weights (`reduce_range`), and the one
  whose embeddings of the first batch of photos (the collection's own) are closer to fp32
  is kept. On CPUs without AVX-512 VNNI (this project's 2-core AVX2 machine among them) ONNX
  Runtime multiplies u8 activations by s8 weights with an instruction whose pairwise sums
  saturate at 16 bits, and full-range weights can overflow it; 7-bit weights cannot, at the
  price of half the resolution. Which matters more depends on the model: over 32 Flickr
  photos, ViT-B-32's cosine to fp32 is 0.9846 (min 0.978) with full-range weights and
  0.9996 (min 0.9995) with 7-bit ones, at the same speed; clipsearch-mini's is 0.9990 with
  full-range and 0.9965 with 7-bit ones (64 photos). The choice is kept in
  `image.int8-onnx.v2.json` beside the export.
- OpenVINO: static quantisation with NNCF, calibrated on the first batch of photos the first
  int8 run encodes (the collection's own photos), kept for later runs.

Which is faster, and by how much, is measured in benchmarks/results/runtimes.md.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from clipsearch.errors import ModelLoadError
from clipsearch.models.quiet import quiet_logger
from clipsearch.models.runtime.auto_int8 import unit

Array = np.ndarray[Any, Any]


#: The ONNX int8 file's version: 2 chooses between full-range and 7-bit weights (files of
#: version 1, always full-range, are left unused and made again).
ONNX_INT8_VERSION = 2


def int8_path(folder: Path, runtime: str) -> Path:
    if runtime == "onnx":
        return folder / f"image.int8-onnx.v{ONNX_INT8_VERSION}.onnx"
    return folder / "image.int8-openvino.xml"


def quantized_image_tower(folder: Path, runtime: str, sample: Array) -> Path:
    """The int8 image tower for `runtime`, quantising the fp32 one on first use (OpenVINO
    calibrates on `sample`, a batch of preprocessed photos)."""
    target = int8_path(folder, runtime)
    if target.is_file():
        return target
    if runtime == "openvino":
        return _openvino_int8(folder, target, sample)
    return _onnx_int8(folder, target, sample)


def _onnx_int8(folder: Path, target: Path, sample: Array) -> Path:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise ModelLoadError(
            "--precision int8 needs ONNX Runtime's quantisation tools: pip install onnxruntime onnx"
        ) from exc
    from clipsearch.models.runtime.backends import OnnxTower

    made: dict[bool, Path] = {}
    try:
        for reduce_range in (False, True):
            handle, scratch = tempfile.mkstemp(suffix=".onnx", dir=folder)
            os.close(handle)
            made[reduce_range] = Path(scratch)
            with quiet_logger(None):  # its advice to pre-process the model
                quantize_dynamic(
                    folder / "image.onnx", scratch, weight_type=QuantType.QInt8,
                    reduce_range=reduce_range,
                )  # fmt: skip
        reference = unit(OnnxTower(folder / "image.onnx")(sample))
        closeness = {
            reduce_range: (unit(OnnxTower(path)(sample)) * reference).sum(axis=1)
            for reduce_range, path in made.items()
        }
        best = max(closeness, key=lambda r: float(closeness[r].mean()))
        record = {
            "reduce_range": best, "photos": len(sample),
            "cosine_to_fp32": {str(r).lower(): round(float(c.mean()), 5)
                               for r, c in closeness.items()},
        }  # fmt: skip
        target.with_suffix(".json").write_text(json.dumps(record, indent=1), encoding="utf-8")
        os.replace(made[best], target)
    finally:
        for path in made.values():
            path.unlink(missing_ok=True)
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
