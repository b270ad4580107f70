"""The model registry: built-ins register like plugins; a real plugin package, installed with
pip, indexes and searches from the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from clipsearch.errors import ModelSpecError
from clipsearch.models import model_identity, register_encoder, registrations
from clipsearch.models.registry import find
from tests.conftest import REPO

PLUGIN = REPO / "tests" / "plugin_example"


def test_builtins_are_registered_and_open_clip_is_the_fallback() -> None:
    names = registrations()
    assert {"clipsearch-mini", "tiny-random"} <= set(names)
    assert find("ViT-B-32:laion2b_s34b_b79k").prefix == ""  # open_clip: anything else
    assert find("clipsearch-mini").prefix == "clipsearch-mini"
    assert model_identity("tiny-random") == "clipsearch-tiny:random-seed0"


def test_a_registered_loader_serves_its_prefix(tiny_encoder: object) -> None:
    calls: list[tuple[str, str | None]] = []

    def loader(spec: str, device: str | None) -> object:
        calls.append((spec, device))
        return tiny_encoder

    register_encoder("test-only", loader, identity=lambda spec: f"test-only/{spec}")  # type: ignore[arg-type]
    from clipsearch.models import load_encoder

    assert load_encoder("test-only:v2", device="cpu") is tiny_encoder
    assert calls == [("test-only:v2", "cpu")]
    assert model_identity("test-only:v2") == "test-only/test-only:v2"
    with pytest.raises(ModelSpecError, match="without ':'"):
        register_encoder("bad:prefix", loader)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin, installed by pip into a folder of its own (offline, no deps)."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--disable-pip-version-check", "--target", str(target),
         str(PLUGIN)],
        capture_output=True, text=True, cwd=build,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert list(target.glob("clipsearch_colour_hist-*.dist-info"))
    return target


def _cli(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    return subprocess.run(
        [sys.executable, "-m", "clipsearch.cli", *args], capture_output=True, text=True, env=env
    )


def test_an_installed_plugin_indexes_and_searches_from_the_cli(
    plugin_site: Path, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, colour in [("red", (220, 10, 10)), ("green", (10, 200, 10)), ("blue", (0, 0, 230))]:
        Image.new("RGB", (64, 48), colour).save(photos / f"{name}.png")
    db = str(tmp_path / "db")
    result = _cli(plugin_site, "index", str(photos), "--db", db, "--model", "colour-hist",
                  "--workers", "2", "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "added 3" in result.stdout
    for colour in ("red", "green", "blue"):
        result = _cli(plugin_site, "search", colour, "--db", db, "--json", "-k", "1")
        assert result.returncode == 0, result.stderr
        assert Path(json.loads(result.stdout)[0]["path"]).stem == colour
    stats = json.loads(_cli(plugin_site, "stats", "--db", db, "--json").stdout)
    assert (stats["model"], stats["model_identity"], stats["dim"]) == (
        "colour-hist", "colour-hist:4-bins-v1", 64,
    )  # fmt: skip
    result = _cli(plugin_site, "search", "red", "--db", db, "--model", "colour-hist:2")
    assert result.returncode == 1 and "was built with model 'colour-hist'" in result.stderr
    # Without the plugin installed, the index says which model it needs.
    result = _cli(tmp_path, "search", "yellow", "--db", db)
    assert result.returncode == 1 and "no installed plugin serves it" in result.stderr
