"""Model specs, loading errors, and the index's record of its model."""

from __future__ import annotations

from pathlib import Path

import pytest

import clipsearch
from clipsearch.errors import ModelLoadError, ModelMismatchError, ModelSpecError
from clipsearch.models import load_encoder, parse_model_spec
from tests.conftest import CountingEncoder, write_images


def test_spec_parsing(tmp_path: Path) -> None:
    tiny = parse_model_spec("tiny-random")
    assert (tiny.arch, tiny.weights, tiny.identity) == (
        "clipsearch-tiny",
        None,
        "clipsearch-tiny:random-seed0",
    )
    hub = parse_model_spec("ViT-B-32:laion2b_s34b_b79k")
    assert (hub.arch, hub.weights, hub.is_local_file) == ("ViT-B-32", "laion2b_s34b_b79k", False)
    assert hub.identity == "ViT-B-32:laion2b_s34b_b79k"
    ckpt = tmp_path / "weights.pt"
    ckpt.write_bytes(b"x" * 100)
    local = parse_model_spec(f"ViT-B-32:{ckpt}")
    assert local.is_local_file and local.weights == str(ckpt)
    moved = tmp_path / "elsewhere.pt"
    moved.write_bytes(b"x" * 100)
    assert parse_model_spec(f"ViT-B-32:{moved}").identity == local.identity  # by content
    assert parse_model_spec("hf-hub:org/repo").arch == "hf-hub:org/repo"
    for bad in ("", ":openai", "ViT-B-32:"):
        with pytest.raises(ModelSpecError):
            parse_model_spec(bad)


def test_unknown_architecture_and_tag_are_clear_errors() -> None:
    with pytest.raises(ModelSpecError, match="unknown model 'ViT-Q-99': no installed plugin"):
        load_encoder("ViT-Q-99:openai")
    with pytest.raises(ModelSpecError, match="no published weights 'nonsense'"):
        load_encoder("ViT-B-32:nonsense")


def test_missing_checkpoint_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="checkpoint file not found"):
        load_encoder(f"ViT-B-32:{tmp_path / 'missing.pt'}")
    with pytest.raises(ModelSpecError, match="cannot read checkpoint"):
        parse_model_spec(f"ViT-B-32:{tmp_path / 'missing.pt'}").identity  # noqa: B018


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file at all")
    with pytest.raises(ModelLoadError, match="could not load checkpoint"):
        load_encoder(f"clipsearch-tiny:{bad}", device="cpu")


def test_hub_weights_offline_say_how_to_use_a_local_file() -> None:
    # HF_HUB_OFFLINE=1 (set in conftest): the download fails at once, as it would offline.
    with pytest.raises(ModelLoadError) as err:
        load_encoder("RN50:openai", device="cpu")
    message = str(err.value)
    assert "--model RN50:/path/to/" in message and "RN50:openai" in message
    assert "HF_HUB_OFFLINE is set" in message


def test_unreachable_hub_fails_fast_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """Online mode, but the hub endpoint refuses connections (a closed loopback port)."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelLoadError, match=r"cannot reach 127\.0\.0\.1:9"):
        load_encoder("RN50:openai", device="cpu")


def test_cuda_asked_for_without_a_gpu_is_a_clear_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelLoadError, match="no CUDA GPU"):
        load_encoder("tiny-random", device="cuda")


def test_index_records_its_model_and_refuses_another(
    tmp_path: Path, counting_encoder: CountingEncoder
) -> None:
    write_images(tmp_path / "photos", 2)
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx:
        idx.add([tmp_path / "photos"])
    with clipsearch.open(tmp_path / "db") as idx:  # no model given: the recorded one
        info = idx.model_info
        assert info is not None and (info.spec, info.dim) == ("tiny-random", 64)
        assert len(idx.search(text="x", k=1)) == 1
    with pytest.raises(ModelMismatchError, match="built with model 'tiny-random'"):
        clipsearch.open(tmp_path / "db", model="ViT-B-32:openai")
    other = tmp_path / "other.pt"
    other.write_bytes(b"\0" * 64)
    with pytest.raises(ModelMismatchError):
        clipsearch.open(tmp_path / "db", model=f"clipsearch-tiny:{other}")
