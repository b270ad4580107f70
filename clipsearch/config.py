"""One resolver for settings: flags > environment (CLIPSEARCH_*) > config file > defaults.

The config file is TOML at `$CLIPSEARCH_CONFIG`, else `$XDG_CONFIG_HOME/clipsearch/config.toml`
(`~/.config/clipsearch/config.toml`), with the same keys as the fields of `Settings`:

    db = "~/photos-index"           # or "postgresql+psycopg://me@dbhost/photos"
    cache_dir = "~/.cache/clipsearch/indexes"  # local caches of a PostgreSQL index
    model = "ViT-B-32:laion2b_s34b_b79k"
    runtime = "onnx"                # torch, onnx, openvino or auto (the fastest measured)
    workers = 2
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from clipsearch.errors import ConfigError
from clipsearch.indexer.decode import DEFAULT_MAX_PIXELS
from clipsearch.indexer.options import DEFAULT_MAX_FRAMES
from clipsearch.models.runtime.choice import PRECISIONS, RUNTIMES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def default_db_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return str(Path(base) / "clipsearch")


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class Settings:
    db: str  # an index folder (SQLite) or a PostgreSQL URL
    cache_dir: Path | None  # None: the index folder (SQLite), the user's cache (PostgreSQL)
    model: str | None  # None: the model recorded in the index, else DEFAULT_MODEL
    device: str | None  # None: CUDA when available, else CPU
    runtime: str | None  # None: as the index's vectors were made, else auto
    precision: str | None  # None: as the index's vectors were made, else fp32
    batch_size: int
    workers: int
    max_pixels: int
    max_frames_per_video: int


def config_path() -> Path:
    explicit = os.environ.get("CLIPSEARCH_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(base) / "clipsearch" / "config.toml"


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; known keys are {sorted(known)}")
    return data


def _convert(name: str, value: Any, source: str) -> Any:
    try:
        if name == "db":
            text = str(value)
            return text if "://" in text else str(Path(text).expanduser())
        if name == "cache_dir":
            return Path(str(value)).expanduser()
        if name in ("runtime", "precision"):
            text = str(value).strip().lower()
            allowed = RUNTIMES if name == "runtime" else PRECISIONS
            if text not in allowed:
                raise ValueError(f"use one of {', '.join(allowed)}")
            return text
        if name in ("batch_size", "workers", "max_pixels", "max_frames_per_video"):
            number = int(value)
            if number < (0 if name == "workers" else 1):
                raise ValueError("too small")
            return number
        return None if value in ("", None) else str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {name}={value!r} from {source}: {exc}") from exc


def resolve(**flags: Any) -> Settings:
    """Settings from the given flags (None = not given), the environment, the file, defaults."""
    defaults: dict[str, Any] = {
        "db": default_db_dir(),
        "cache_dir": None,
        "model": None,
        "device": None,
        "runtime": None,
        "precision": None,
        "batch_size": 32,
        "workers": default_workers(),
        "max_pixels": DEFAULT_MAX_PIXELS,
        "max_frames_per_video": DEFAULT_MAX_FRAMES,
    }
    path = config_path()
    from_file = _read_config_file(path)
    values: dict[str, Any] = {}
    for name in defaults:
        env = os.environ.get(f"CLIPSEARCH_{name.upper()}")
        if flags.get(name) is not None:
            values[name] = _convert(name, flags[name], f"--{name.replace('_', '-')}")
        elif env:
            values[name] = _convert(name, env, f"CLIPSEARCH_{name.upper()}")
        elif name in from_file:
            values[name] = _convert(name, from_file[name], str(path))
        else:
            values[name] = defaults[name]
    return Settings(**values)
