"""The lean install (requirements-lean.txt, no torch): it indexes and searches with ONNX
Runtime on a model exported once by the full install, and says clearly what it cannot do.

Runs against `.venv-lean` (made by `bash scripts/setup-lean`, which `scripts/setup` runs) or
the interpreter `CLIPSEARCH_LEAN_PYTHON` names; skips without one, fails in CI."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import clipsearch
from clipsearch.models import RuntimeChoice, load_encoder
from tests.conftest import REPO, write_images
from tests.ranking import SCORE_TOLERANCE, assert_same_ranking


def _lean_python() -> str:
    named = os.environ.get("CLIPSEARCH_LEAN_PYTHON") or str(REPO / ".venv-lean" / "bin" / "python")
    if not Path(named).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must have the lean install at {named}: bash scripts/setup-lean")
        pytest.skip(f"no lean install at {named}: run bash scripts/setup-lean")
    return named


def _lean(*argv: str, cache: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if cache is not None:
        env["CLIPSEARCH_MODEL_CACHE"] = cache
    return subprocess.run(
        [_lean_python(), "-m", "clipsearch.cli", *argv], capture_output=True, text=True, env=env
    )


def test_the_lean_install_has_no_torch() -> None:
    out = subprocess.run([_lean_python(), "-c", "import torch"], capture_output=True, text=True)
    assert out.returncode != 0 and "No module named 'torch'" in out.stderr


def test_it_indexes_and_searches_like_the_full_install(tmp_path: Path) -> None:
    load_encoder("clipsearch-mini", "cpu", RuntimeChoice("onnx"))  # the full install exports
    photos = tmp_path / "photos"
    write_images(photos, 40)
    db = str(tmp_path / "db")
    # fp32 stated: left to auto, int8 is chosen where measured 1.2x as fast (issue 27)
    added = _lean("index", str(photos), "--db", db, "--model", "clipsearch-mini",
                  "--runtime", "onnx", "--precision", "fp32", "--json")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["added"] == 40
    found = _lean("search", "a red square on blue", "--db", db, "--mode", "semantic", "--json")
    like = _lean("search", "--image", str(photos / "img_0007.jpg"), "--db", db, "--json")
    assert found.returncode == 0 and like.returncode == 0, found.stderr + like.stderr
    with clipsearch.open(db, runtime="torch", device="cpu", workers=0) as idx:
        expected = idx.search("a red square on blue", k=40, mode="semantic")
        expected_like = idx.search(image=photos / "img_0007.jpg", k=40)
    for answer, reference in ((found, expected), (like, expected_like)):
        hits = [(h["id"], h["score"]) for h in json.loads(answer.stdout)]
        assert len(hits) == 10
        assert_same_ranking(hits, {h.id: h.score for h in reference}, SCORE_TOLERANCE)


def test_without_an_export_it_says_how_to_get_one(tmp_path: Path) -> None:
    write_images(tmp_path / "photos", 3)
    out = _lean("index", str(tmp_path / "photos"), "--db", str(tmp_path / "db"), "--model",
                "clipsearch-mini", cache=str(tmp_path / "empty-cache"))  # fmt: skip
    assert out.returncode == 1
    assert "exporting needs torch" in out.stderr and "CLIPSEARCH_MODEL_CACHE" in out.stderr
    assert "Traceback" not in out.stderr


def test_what_needs_torch_says_so(tmp_path: Path) -> None:
    load_encoder("clipsearch-mini", "cpu", RuntimeChoice("onnx"))
    write_images(tmp_path / "photos", 4)
    db = str(tmp_path / "db")
    assert _lean("index", str(tmp_path / "photos"), "--db", db, "--model",
                 "clipsearch-mini").returncode == 0  # fmt: skip
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image,caption\nimg_0000.jpg,a thing\n")
    for argv in (["tune", str(pairs), "--db", db], ["search", "x", "--db", db, "--runtime",
                                                     "torch"]):  # fmt: skip
        out = _lean(*argv)
        assert out.returncode == 1, out.stderr
        assert "needs torch" in out.stderr and "Traceback" not in out.stderr
