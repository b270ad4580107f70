"""One exported tower, run by ONNX Runtime or OpenVINO: an array in, an array out."""

from __future__ import annotations

import functools
import os
import queue
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from clipsearch.errors import ModelLoadError

Array = np.ndarray[Any, Any]


class Tower(Protocol):
    def __call__(self, inputs: Array) -> Array: ...


def threads() -> int:
    """The threads a tower uses: `CLIPSEARCH_THREADS`, else every core."""
    return max(1, int(os.environ.get("CLIPSEARCH_THREADS") or os.cpu_count() or 1))


class OnnxTower:
    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelLoadError(
                "--runtime onnx needs ONNX Runtime: pip install onnxruntime"
            ) from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, inputs: Array) -> Array:
        return np.asarray(self.session.run(None, {self.input: inputs})[0])


@functools.cache
def openvino_core() -> Any:
    """One OpenVINO `Core` per process, never released: creating a Core per model and
    letting them go crashes the process after some dozens of loads (openvinotoolkit/openvino
    #35338, ultralytics/ultralytics #25864), as it did this project's test suite."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise ModelLoadError(
            "--runtime openvino needs OpenVINO: pip install 'clipsearch[openvino]'"
        ) from exc
    return ov.Core()


#: Infer requests per OpenVINO tower: threads beyond wait for one. Each inference already
#: runs on every core (the LATENCY hint), so more at once only queue inside the plugin.
REQUESTS = 2


class OpenVinoTower:
    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        # Compiled blobs are cached beside the export: the second load skips compilation.
        # f32 stated, not left to the plugin: on a CPU with AVX512_BF16 OpenVINO's default is
        # bf16, whose vectors differ from torch's by up to 4e-3 a component (cosine 0.99996)
        # and reorder near-tied hits, while on AVX2 the same call gives f32 (issue 27).
        self.compiled = openvino_core().compile_model(
            str(path),
            "CPU",
            {
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": "f32",
                "INFERENCE_NUM_THREADS": num_threads or threads(),
                # The plugin keys cached blobs by device, not by these settings: a folder of
                # its own keeps blobs compiled with the bf16 default from being loaded.
                "CACHE_DIR": str(path.parent / "openvino-cache-f32"),
            },
        )
        # A few infer requests, made and run once here, on one thread, then lent out: a
        # request runs one inference at a time (one shared by a server's threads failed with
        # "Infer Request is busy" or handed a thread another's output), and a request made
        # or first run while other threads infer could deadlock the process (a thread in
        # create_infer_request, another in pybind11's first-use set-up of numpy under
        # std::call_once: the server hang of issue 28). The compiled model is shared.
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        warm_up = _zeros_for(self.compiled.input(0))
        for _ in range(REQUESTS):
            request = self.compiled.create_infer_request()
            request.infer({0: warm_up})
            self._idle.put(request)

    def __call__(self, inputs: Array) -> Array:
        request = self._idle.get()  # waits while all are busy (each uses every core anyway)
        try:
            result = request.infer({0: inputs})  # copies the output out of the request
        finally:
            self._idle.put(request)
        return np.asarray(result[self.compiled.output(0)])


def _zeros_for(port: Any) -> Array:
    """An input of the port's type, its dynamic dimensions (batch, text length) set to 1."""
    dims = [d.get_length() if d.is_static else 1 for d in port.get_partial_shape()]
    return np.zeros(dims, dtype=port.get_element_type().to_dtype())


def open_tower(runtime: str, path: Path, num_threads: int | None = None) -> Tower:
    """The tower at `path`, run on `num_threads` threads (default: `threads()`)."""
    if runtime == "onnx":
        return OnnxTower(path, num_threads)
    if runtime == "openvino":
        return OpenVinoTower(path, num_threads)
    raise ModelLoadError(f"no exported-model runtime {runtime!r}")
