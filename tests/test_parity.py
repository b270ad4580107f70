"""Stored vectors equal open_clip's own encode_image / encode_text for the same weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

import clipsearch
from clipsearch.models import load_encoder
from clipsearch.models.openclip import register_configs
from clipsearch.models.runtime import auto_int8
from tests.conftest import need_runtime, write_images


def _reference_model() -> tuple[torch.nn.Module, object, object]:
    """The same seeded tiny model, built directly with open_clip, no clipsearch code."""
    register_configs()
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("clipsearch-tiny")
    model.eval()
    return model, preprocess, open_clip.get_tokenizer("clipsearch-tiny")


def _normalised(x: torch.Tensor) -> np.ndarray:
    return (x / x.norm(dim=-1, keepdim=True)).numpy()


def _indexed_and_reference(
    tmp_path: Path, **options: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Index photos and embed texts through clipsearch with `options`, and the same through
    open_clip alone: (ours_images, ref_images, ours_text, ref_text, kind of ours)."""
    paths = write_images(tmp_path / "photos", 5) + write_images(tmp_path / "photos", 3, 5, ".png")
    texts = ["a red square", "two blue circles"]
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0, **options) as idx:
        idx.add([tmp_path / "photos"])
        rows = {r.path: np.frombuffer(r.vector, dtype=np.float32) for r in idx.db.rows()}
        ours_text = idx.encoder.encode_texts(texts)
        kind = str(idx.db.get_meta()["image_vectors"])

    model, preprocess, tokenizer = _reference_model()
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
        ref_images = _normalised(model.encode_image(pixels))
        ref_text = _normalised(model.encode_text(tokenizer(texts)))
    return np.stack([rows[str(p)] for p in paths]), ref_images, ours_text, ref_text, kind


@pytest.mark.parametrize("runtime", ["torch", "onnx", "openvino"])
def test_image_and_text_vectors_match_open_clip(tmp_path: Path, runtime: str) -> None:
    """Every runtime in fp32, through the whole indexing path. The runtime and precision are
    stated: left to `auto`, which is measured (the fastest runtime; int8 where it is 1.2x as
    fast), the vectors depended on the machine's load that moment (issue 27)."""
    need_runtime(runtime)
    # On the CPU: torch on a GPU runs fp16 (autocast), another comparison
    ours_images, ref_images, ours_text, ref_text, kind = _indexed_and_reference(
        tmp_path, runtime=runtime, precision="fp32", device="cpu"
    )
    assert kind == "fp32"
    np.testing.assert_allclose(ours_images, ref_images, atol=1e-5)
    np.testing.assert_allclose(ours_text, ref_text, atol=1e-5)


def test_the_default_runtime_matches_open_clip_as_far_as_its_precision_allows(
    tmp_path: Path,
) -> None:
    """Left to auto, whichever runtime and precision the measurement picks: fp32 vectors
    equal open_clip's, int8 ones (recorded as such) stay within the int8 bar; text always fp32."""
    ours_images, ref_images, ours_text, ref_text, kind = _indexed_and_reference(
        tmp_path, device="cpu"
    )
    np.testing.assert_allclose(ours_text, ref_text, atol=1e-5)
    if kind == "fp32":
        np.testing.assert_allclose(ours_images, ref_images, atol=1e-5)
    else:
        assert kind == "int8-onnx"
        assert float((ours_images * ref_images).sum(axis=1).min()) >= auto_int8.MIN_COSINE[1]


def test_local_checkpoint_goes_through_open_clips_loader(tmp_path: Path) -> None:
    """`ARCH:/path/to/file.pt` loads real weights from disk (the offline path for real CLIP)."""
    register_configs()
    torch.manual_seed(1234)  # other weights than tiny-random's seed 0
    model = open_clip.create_model("clipsearch-tiny")
    model.eval()
    checkpoint = tmp_path / "my-clip.pt"
    torch.save({"state_dict": model.state_dict()}, checkpoint)

    encoder = load_encoder(f"clipsearch-tiny:{checkpoint}", device="cpu")
    tokenizer = open_clip.get_tokenizer("clipsearch-tiny")
    with torch.no_grad():
        expected = _normalised(model.encode_text(tokenizer(["a dog on a beach"])))
    np.testing.assert_allclose(encoder.encode_texts(["a dog on a beach"]), expected, atol=1e-5)
    assert encoder.info.identity.startswith("clipsearch-tiny:file-sha256-")
    seeded = load_encoder("tiny-random", device="cpu")
    assert not np.allclose(seeded.encode_texts(["a dog on a beach"]), expected, atol=1e-3)


def test_large_jpeg_draft_decode_stays_close_to_full_decode(tmp_path: Path) -> None:
    """Draft mode (DCT-scaled decode) changes pixels slightly, not the embedding's meaning."""
    path = write_images(tmp_path, 1, size=(1600, 1200))[0]
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx:
        idx.add([path])
        stored = np.frombuffer(idx.db.rows()[0].vector, dtype=np.float32)
        encoder = idx.encoder
        full = encoder.encode_images(encoder.preprocess(Image.open(path).convert("RGB"))[None])[0]
    assert float(stored @ full) > 0.99
    assert idx.db.rows()[0].width == 1600  # the original size is recorded, not the draft's


@pytest.mark.parametrize("k", [1, 3])
def test_text_query_vector_is_the_encoders(tmp_path: Path, k: int) -> None:
    write_images(tmp_path / "photos", 4)
    with clipsearch.open(tmp_path / "db", model="tiny-random", workers=0) as idx:
        idx.add([tmp_path / "photos"])
        query = idx.embed_query(text="a photo")
        np.testing.assert_allclose(query, idx.encoder.encode_texts(["a photo"])[0], atol=1e-6)
        assert len(idx.search(text="a photo", k=k)) == k
