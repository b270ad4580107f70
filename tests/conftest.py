"""Shared fixtures: a real tiny open_clip model, generated images, a counting encoder."""

from __future__ import annotations

import os
import tempfile

# Tests never download: any attempt to reach the hub must fail fast instead.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("CLIPSEARCH_CONFIG", os.devnull + ".absent.toml")
# The local caches of PostgreSQL indexes go to a folder of this run, not the user's.
os.environ["CLIPSEARCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="clipsearch-test-caches-")
# So do the models exported for the optimised runtimes (made once per test run).
os.environ["CLIPSEARCH_MODEL_CACHE"] = tempfile.mkdtemp(prefix="clipsearch-test-models-")

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from clipsearch.models import Encoder, load_encoder

#: The served collection's fixtures (`collection`, `service`) for the server tests.
pytest_plugins = ["tests.serving", "tests.stores"]

REPO = Path(__file__).resolve().parent.parent
FLICKR = REPO.parent / "shared" / "datasets" / "flickr8k-dev"


def make_image(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A distinct, deterministic picture: a coloured background with a few shapes."""
    rng = np.random.default_rng(seed)
    background = tuple(int(c) for c in rng.integers(0, 256, 3))
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, size[0] - 10)), int(rng.integers(0, size[1] - 10))
        x1, y1 = x0 + int(rng.integers(8, size[0] // 2)), y0 + int(rng.integers(8, size[1] // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
    return image


def write_images(
    folder: Path, count: int, start: int = 0, ext: str = ".jpg", size: tuple[int, int] = (160, 120)
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        path = folder / f"img_{i:04d}{ext}"
        make_image(i, size).save(path, quality=92) if ext == ".jpg" else make_image(i, size).save(
            path
        )
        paths.append(path)
    return paths


class CountingEncoder:
    """Wraps a real encoder and counts how many images and texts went through the model."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.info = inner.info
        self.input_size = inner.input_size
        self.preprocess = inner.preprocess
        self.images_encoded = 0
        self.texts_encoded = 0

    def encode_images(self, pixels: Any) -> Any:
        self.images_encoded += len(pixels)
        return self.inner.encode_images(pixels)

    def encode_texts(self, texts: Sequence[str]) -> Any:
        self.texts_encoded += len(texts)
        return self.inner.encode_texts(texts)


@pytest.fixture(scope="session")
def tiny_encoder() -> Encoder:
    return load_encoder("tiny-random", device="cpu")


@pytest.fixture
def counting_encoder(tiny_encoder: Encoder) -> CountingEncoder:
    return CountingEncoder(tiny_encoder)


@pytest.fixture
def images(tmp_path: Path) -> Callable[..., list[Path]]:
    def make(count: int, start: int = 0, ext: str = ".jpg", sub: str = "photos") -> list[Path]:
        return write_images(tmp_path / sub, count, start, ext)

    return make


def need_runtime(runtime: str) -> None:
    """Skip where `runtime` (torch, onnx, openvino) is not installed; in CI, fail instead:
    CI installs all of them (bash scripts/setup)."""
    from clipsearch.models.runtime.load import installed

    if not installed(runtime):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{runtime} must be installed in CI (bash scripts/setup)")
        package = {"onnx": "onnxruntime", "openvino": "'clipsearch[openvino]'"}.get(
            runtime, runtime
        )
        pytest.skip(f"{runtime} is not installed: pip install {package}")


def run_cli_checking_imports(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run `clipsearch ARGV` in a fresh interpreter that fails if torch or open_clip got
    imported on the way (commands that need no model must stay light)."""
    snippet = (
        "import sys\n"
        "from clipsearch.cli import main\n"
        f"sys.argv = ['clipsearch', *{list(argv)!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'open_clip' not in sys.modules, 'open_clip was imported'\n"
    )
    return subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True)
