"""Model runtimes: the same model's towers run by torch, ONNX Runtime or OpenVINO.

A model is exported once from its torch form into ONNX (`export.py`), cached in the user's
cache folder under a key of the model's identity, and then loaded without torch: numpy
preprocessing (`pixels.py`), a torch-free tokenizer (`tokens.py`), one session per tower
(`backends.py`). `choice.py` says which runtime and precision a run uses and what an index
records of them.
"""

from __future__ import annotations

from clipsearch.models.runtime.choice import (
    PRECISIONS,
    RUNTIMES,
    RuntimeChoice,
    vectors_kind,
)

__all__ = ["PRECISIONS", "RUNTIMES", "RuntimeChoice", "vectors_kind"]
