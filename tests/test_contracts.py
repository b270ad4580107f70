"""The import contracts see the whole package: every top-level module or package of
clipsearch is either the one part a third-party boundary allows, or among the sources the
contract forbids it to (a module added later cannot slip past `lint-imports`)."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11 and later")

ROOT = Path(__file__).resolve().parent.parent


def _top_level() -> set[str]:
    package = ROOT / "clipsearch"
    found = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    found |= {p.name for p in package.iterdir() if (p / "__init__.py").exists()}
    return {f"clipsearch.{name}" for name in found}


def test_every_boundary_contract_covers_every_other_part_of_the_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert config["include_external_packages"] is True
    forbidden = [c for c in config["contracts"] if c["type"] == "forbidden"]
    assert {m for c in forbidden for m in c["forbidden_modules"]} >= {
        "sqlalchemy", "sqlite3", "psycopg", "faiss", "torch", "open_clip", "onnxruntime",
        "openvino", "transformers", "av", "ray", "fastapi", "starlette", "uvicorn", "typer",
    }  # fmt: skip
    every = _top_level()
    for contract in forbidden:
        missing = every - set(contract["source_modules"])
        assert len(missing) == 1, (contract["name"], sorted(missing))  # only the one allowed
