"""What a measurement made on this machine depends on (the CPU, its cores, the versions of
the runtimes), so that a kept measurement is taken again on another machine or after an
upgrade (`choice.json`, `int8-choice.json` beside an export)."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

#: The package each runtime comes from.
RUNTIME_MODULES = {"torch": "torch", "onnx": "onnxruntime", "openvino": "openvino"}


def machine() -> dict[str, Any]:
    versions = {}
    for runtime, module in RUNTIME_MODULES.items():
        try:
            versions[runtime] = version(module)
        except PackageNotFoundError:
            continue
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "versions": versions}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
