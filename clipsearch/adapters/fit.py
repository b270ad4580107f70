"""Fitting an adapter on image-caption pairs: symmetric InfoNCE over the stored embeddings.

Both maps start at the identity (W = I, b = 0), so the untrained adapter is the untuned
index. Training pulls each caption towards its photo and away from the other photos in the
batch (and the other way round), with a learnable temperature, a penalty λ‖W - I‖² that keeps
the maps near the identity (or a low-rank update W = I + U Vᵀ with a penalty on U and V), and
early stopping on a held-out part of the photos (all captions of a photo fall on one side).
No image is decoded and no text is encoded here: the caller passes vectors. (Imports torch:
import this module only when fitting.)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from clipsearch.adapters.model import Adapter, unit_rows
from clipsearch.arrays import Matrix
from clipsearch.errors import AdapterError

KS = (1, 5, 10)


@dataclass(frozen=True)
class FitSettings:
    validate_fraction: float = 0.2
    rank: int | None = None  # None: full matrices; R: W = I + U Vᵀ with U, V of rank R
    weight_decay: float = 0.1  # λ of λ‖W - I‖² (or of λ(‖U‖² + ‖V‖²))
    learning_rate: float = 1e-3
    max_epochs: int = 200
    patience: int = 15  # epochs without a better validation loss before stopping
    batch_size: int = 256  # photos per step, one caption of each
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.validate_fraction < 1.0:
            raise AdapterError("the validation fraction must be between 0 and 1")
        if self.rank is not None and self.rank < 1:
            raise AdapterError(f"rank must be at least 1, got {self.rank}")


@dataclass
class FitReport:
    """What fitting did, measured on the held-out photos and their captions."""

    fit_images: int
    fit_captions: int
    validation_images: int
    validation_captions: int
    before: dict[str, float]
    after: dict[str, float]
    epochs: int
    best_epoch: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def improved(self) -> bool:
        """The rule for keeping an adapter: the sum of the six validation recalls rises, and
        neither text→image R@1 nor R@5 (the first hits a searcher sees) falls."""
        kept_top = all(
            self.after[key] >= self.before[key]
            for key in ("text_to_image_R@1", "text_to_image_R@5")
            if key in self.before
        )
        return rsum(self.after) > rsum(self.before) and kept_top

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rsum(recalls: dict[str, float]) -> float:
    """The sum of the six recalls, the usual one-number summary of cross-modal retrieval."""
    return sum(v for k, v in recalls.items() if "R@" in k)


def recalls(images: Matrix, texts: Matrix, image_of: np.ndarray[Any, Any]) -> dict[str, float]:
    """Recall@1/5/10 both ways, exact, with all the given photos and captions as the pool."""
    sims = texts @ images.T  # (captions, photos)
    own = sims[np.arange(len(texts)), image_of]
    t2i_rank = (sims > own[:, None]).sum(axis=1) + 1
    out = {f"text_to_image_R@{k}": float(np.mean(t2i_rank <= k)) for k in KS}
    best_caption_rank = np.full(len(images), np.iinfo(np.int64).max)
    order = np.argsort(-sims.T, axis=1, kind="stable")  # (photos, captions)
    for photo in range(len(images)):
        relevant = np.flatnonzero(image_of[order[photo]] == photo)
        if len(relevant):
            best_caption_rank[photo] = int(relevant[0]) + 1
    out |= {f"image_to_text_R@{k}": float(np.mean(best_caption_rank <= k)) for k in KS}
    return out


def split_photos(n_images: int, fraction: float, seed: int) -> tuple[np.ndarray[Any, Any], ...]:
    order = np.random.default_rng(seed).permutation(n_images)
    n_val = round(fraction * n_images)
    if n_val < 2 or n_images - n_val < 2:
        raise AdapterError(
            f"{n_images} photos are too few to fit and validate an adapter with a "
            f"{fraction:g} validation fraction; give more pairs"
        )
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def fit_adapter(
    image_vectors: Matrix,
    text_vectors: Matrix,
    image_of: Sequence[int],
    settings: FitSettings | None = None,
) -> tuple[Adapter, FitReport]:
    """`image_vectors` (P, d) raw photo embeddings, `text_vectors` (C, d) raw caption
    embeddings, `image_of[c]` the photo of caption c."""
    settings = settings or FitSettings()
    started = time.perf_counter()
    photo_of = np.asarray(image_of, dtype=np.int64)
    fit_idx, val_idx = split_photos(len(image_vectors), settings.validate_fraction, settings.seed)
    parts = {name: _subset(image_vectors, text_vectors, photo_of, idx)
             for name, idx in (("fit", fit_idx), ("val", val_idx))}  # fmt: skip
    before = recalls(unit_rows(parts["val"][0]), unit_rows(parts["val"][1]), parts["val"][2])

    torch.manual_seed(settings.seed)
    model = _AffinePair(image_vectors.shape[1], settings.rank)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    rng = np.random.default_rng(settings.seed)
    fit_images, fit_texts = torch.from_numpy(parts["fit"][0]), torch.from_numpy(parts["fit"][1])
    captions_of = [np.flatnonzero(parts["fit"][2] == p) for p in range(len(parts["fit"][0]))]
    val = [torch.from_numpy(a) for a in parts["val"]]
    best_loss, best_epoch, best_state, epoch = float("inf"), 0, model.state_dict(), 0
    for epoch in range(1, settings.max_epochs + 1):
        model.train()
        steps = _steps(len(captions_of), settings)
        for batch in np.array_split(rng.permutation(len(captions_of)), steps):
            chosen = torch.from_numpy(np.array([rng.choice(captions_of[p]) for p in batch]))
            zi, zt = model(fit_images[torch.from_numpy(batch)], fit_texts[chosen])
            loss = _info_nce(zi, zt, model.scale(), torch.arange(len(batch)))
            loss = loss + settings.weight_decay * model.penalty()
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
        model.eval()
        with torch.no_grad():
            zi, zt = model(val[0], val[1])
            val_loss = float(_info_nce(zi, zt, model.scale(), val[2]))
        if val_loss < best_loss - 1e-5:
            best_loss, best_epoch = val_loss, epoch
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= settings.patience:
            break
    model.load_state_dict(best_state)
    adapter = model.to_adapter()
    val_images, val_texts, val_photo_of = parts["val"]
    after = recalls(adapter.images(val_images), adapter.texts(val_texts), val_photo_of)
    report = FitReport(
        fit_images=len(fit_idx), fit_captions=len(parts["fit"][1]),
        validation_images=len(val_idx), validation_captions=len(parts["val"][1]),
        before=before, after=after, epochs=epoch, best_epoch=best_epoch,
        seconds=time.perf_counter() - started, settings=asdict(settings),
    )  # fmt: skip
    return adapter, report


def _subset(
    images: Matrix, texts: Matrix, photo_of: np.ndarray[Any, Any], photos: np.ndarray[Any, Any]
) -> tuple[Matrix, Matrix, np.ndarray[Any, Any]]:
    """The given photos, their captions, and each caption's photo renumbered into the subset."""
    renumber = np.full(len(images), -1, dtype=np.int64)
    renumber[photos] = np.arange(len(photos))
    keep = renumber[photo_of] >= 0
    return (
        np.ascontiguousarray(images[photos], dtype=np.float32),
        np.ascontiguousarray(texts[keep], dtype=np.float32),
        renumber[photo_of[keep]],
    )


def _steps(n_photos: int, settings: FitSettings) -> int:
    return max(1, -(-n_photos // settings.batch_size))


def _info_nce(
    zi: torch.Tensor, zt: torch.Tensor, scale: torch.Tensor, photo_of_text: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE: each caption against all photos; each photo against all captions,
    with every caption of that photo a positive (their log-probabilities averaged)."""
    logits = scale * zt @ zi.T  # (captions, photos)
    text_loss = F.cross_entropy(logits, photo_of_text)
    positive = photo_of_text[None, :] == torch.arange(len(zi))[:, None]  # (photos, captions)
    log_p = F.log_softmax(logits.T, dim=1)
    photo_loss = -(log_p * positive).sum(1) / positive.sum(1).clamp_min(1)
    return (text_loss + photo_loss.mean()) / 2


class _AffinePair(torch.nn.Module):
    """The trainable maps of one adapter."""

    def __init__(self, dim: int, rank: int | None) -> None:
        super().__init__()
        self.dim, self.rank = dim, rank
        eye = torch.eye(dim)
        if rank is None:
            self.w_img = torch.nn.Parameter(eye.clone())
            self.w_txt = torch.nn.Parameter(eye.clone())
        else:  # W = I + U Vᵀ; V starts at zero, so W starts at I
            self.u_img = torch.nn.Parameter(torch.randn(dim, rank) * 0.01)
            self.v_img = torch.nn.Parameter(torch.zeros(dim, rank))
            self.u_txt = torch.nn.Parameter(torch.randn(dim, rank) * 0.01)
            self.v_txt = torch.nn.Parameter(torch.zeros(dim, rank))
        self.b_img = torch.nn.Parameter(torch.zeros(dim))
        self.b_txt = torch.nn.Parameter(torch.zeros(dim))
        self.log_scale = torch.nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.rank is None:
            return self.w_img, self.w_txt
        eye = torch.eye(self.dim)
        return eye + self.u_img @ self.v_img.T, eye + self.u_txt @ self.v_txt.T

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        w_img, w_txt = self.weights()
        zi = F.normalize(images @ w_img.T + self.b_img, dim=-1)
        zt = F.normalize(texts @ w_txt.T + self.b_txt, dim=-1)
        return zi, zt

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=float(np.log(100))).exp()

    def penalty(self) -> torch.Tensor:
        if self.rank is None:
            eye = torch.eye(self.dim)
            return ((self.w_img - eye) ** 2).sum() + ((self.w_txt - eye) ** 2).sum()
        factors = (self.u_img, self.v_img, self.u_txt, self.v_txt)
        return torch.stack([(p**2).sum() for p in factors]).sum()

    def to_adapter(self) -> Adapter:
        with torch.no_grad():
            w_img, w_txt = self.weights()
            w_i, b_i, w_t, b_t = (
                t.detach().numpy().astype(np.float32).copy()
                for t in (w_img, self.b_img, w_txt, self.b_txt)
            )
        return Adapter(w_i, b_i, w_t, b_t, kind="contrastive")
