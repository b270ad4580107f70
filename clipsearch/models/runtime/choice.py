"""Which runtime runs a model, at which precision, and what an index records of it.

The rule for mixing (measured in benchmarks/runtimes.py and enforced by the index): the fp32
embeddings of every runtime agree with torch's to a cosine of at least `FP32_FLOOR`, so an
index's fp32 vectors may come from any runtime and are recorded as `fp32`; int8 embeddings
depend on the runtime's quantisation, so they are recorded with it (`int8-onnx`) and an index
holds vectors of one kind only. Text queries always run in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

from clipsearch.errors import ModelSpecError

RUNTIMES = ("auto", "torch", "onnx", "openvino")
PRECISIONS = ("fp32", "int8", "auto")

#: The least cosine between an fp32 runtime's embedding and torch's (tests hold every
#: runtime to it); above it, vectors from different fp32 runtimes are interchangeable.
FP32_FLOOR = 0.9999


@dataclass(frozen=True)
class RuntimeChoice:
    """`runtime`: torch, onnx, openvino, or auto (the fastest measured on this machine);
    `precision`: fp32, int8 through the runtime's own quantisation, or auto (int8 through
    ONNX Runtime where measured as good and faster on the first photos, see `auto_int8`)."""

    runtime: str = "auto"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ModelSpecError(
                f"unknown runtime {self.runtime!r}: use one of {', '.join(RUNTIMES)}"
            )
        if self.precision not in PRECISIONS:
            raise ModelSpecError(
                f"unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)}"
            )
        if self.runtime == "torch" and self.precision == "int8":
            raise ModelSpecError(
                "int8 runs through an optimised runtime: use --runtime onnx or --runtime "
                "openvino with --precision int8"
            )

    @classmethod
    def parse(cls, runtime: str | None, precision: str | None) -> RuntimeChoice:
        return cls((runtime or "auto").strip().lower(), (precision or "fp32").strip().lower())

    @property
    def label(self) -> str:
        return f"{self.runtime} {self.precision}"


def vectors_kind(runtime: str, precision: str) -> str:
    """What an index records of the image vectors a runtime and precision produce."""
    return "fp32" if precision == "fp32" else f"{precision}-{runtime}"
