"""Train `clipsearch-mini`'s image tower against the locked all-MiniLM-L6-v2 text tower.

LiT style: the text tower is frozen, so every caption is embedded once up front and only the
image tower (a small CNN ending in `z = W x + b`) is trained, on
- CIFAR-10 train: cross-entropy over the 10 class captions, each sample paired with a random
  caption template, with a learnable temperature and label smoothing;
- Flickr8k fit split (600 photos, their captions minus any with a held-out query word):
  symmetric InfoNCE, mixed in for the last epochs.
The validation split (200 photos) and CIFAR-10 test are never trained on.

    .venv/bin/python benchmarks/train_reference_model.py            # ~25 min on 2 cores
    .venv/bin/python benchmarks/train_reference_model.py --epochs 1 --out /tmp/mini.pt
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks import datasets
from benchmarks._common import markdown_table, write_result
from clipsearch._malloc import keep_freed_memory
from clipsearch.models import mini

#: Caption names per CIFAR folder. "car" and "airplane"/"ship"/"truck" are everyday words;
#: the class folder name "automobile" is a held-out query word, so captions say "car".
CAPTION_NAMES = {"automobile": "car"}
TEMPLATES = [
    "a photo of a {}.", "a blurry photo of a {}.", "a low resolution photo of a {}.",
    "a close-up photo of a {}.", "a bright photo of a {}.", "a dark photo of a {}.",
    "a cropped photo of a {}.", "a photo of the {}.", "a good photo of a {}.",
    "a photo of a small {}.", "a photo of a big {}.", "a pixelated photo of a {}.",
    "a picture of a {}.", "an image of a {}.", "a snapshot of a {}.", "there is a {} here.",
    "a {} in the picture.", "the {} in this photo.", "a {} seen from the side.", "a {}.",
]  # fmt: skip


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_cifar(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, 32, 32) uint8 images and (N,) labels, in folder order."""
    folder = datasets.cifar_folder(split)
    images, labels = [], []
    for label, name in enumerate(datasets.CIFAR_CLASSES):
        for path in sorted((folder / name).glob("*.jpg")):
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(label)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return pixels, torch.tensor(labels)


def load_flickr_fit(size: int = 36) -> tuple[torch.Tensor, list[list[str]]]:
    """Fit-split photos as (N, 3, size, size) uint8, and their allowed captions."""
    fit, _ = datasets.flickr_split()
    captions = datasets.flickr_captions()
    banned = datasets.novel_words()
    images, kept = [], []
    for name in fit:
        allowed = [c for c in captions[name] if not datasets.mentions_novel_word(c, banned)]
        if not allowed:
            continue
        image = Image.open(datasets.FLICKR / "images" / name)
        image.draft("RGB", (2 * size, 2 * size))
        image = image.convert("RGB")
        scale = size / min(image.size)
        image = image.resize(
            (max(size, round(image.width * scale)), max(size, round(image.height * scale))),
            Image.Resampling.BICUBIC,
        )
        left, top = (image.width - size) // 2, (image.height - size) // 2
        images.append(np.asarray(image.crop((left, top, left + size, top + size))))
        kept.append(allowed)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), kept


def augment(batch: torch.Tensor, pad: int) -> torch.Tensor:
    """Random crop to 32 (after `pad` px of reflection padding) and horizontal flip."""
    if pad:
        batch = F.pad(batch.float(), (pad, pad, pad, pad), mode="reflect")
    n, _, h, w = batch.shape
    ys = torch.randint(0, h - 32 + 1, (n,))
    xs = torch.randint(0, w - 32 + 1, (n,))
    rows = (ys[:, None] + torch.arange(32)[None, :])[:, None, :, None]
    cols = (xs[:, None] + torch.arange(32)[None, :])[:, None, None, :]
    out = batch.float()[
        torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols
    ]
    flip = torch.rand(n) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def normalise_pixels(batch: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(mini.MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(mini.STD).view(1, 3, 1, 1) * 255
    return ((batch - mean) / std).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def embed_texts(model: mini.MiniCLIP, texts: list[str]) -> torch.Tensor:
    tokenizer = mini.tokenizer()
    out = [model.encode_text(tokenizer(texts[i : i + 256])) for i in range(0, len(texts), 256)]
    return F.normalize(torch.cat(out), dim=-1)


@torch.no_grad()
def cifar_zero_shot(
    model: mini.MiniCLIP, pixels: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor
) -> float:
    model.visual.eval()
    correct = 0
    for i in range(0, len(pixels), 1000):
        z = F.normalize(model.encode_image(normalise_pixels(pixels[i : i + 1000].float())), dim=-1)
        correct += int(((z @ classes.T).argmax(1) == labels[i : i + 1000]).sum())
    model.visual.train()
    return correct / len(pixels)


def write_report(meta: dict[str, object], checkpoint: Path) -> Path:
    """benchmarks/results/reference_training.md, from the checkpoint's own training record."""
    history = meta["history"]
    assert isinstance(history, list)
    rows = [
        [str(h["epoch"]), "yes" if h["epoch"] > meta["epochs"] - meta["flickr_epochs"] else "no",  # type: ignore[operator]
         f"{h['loss']:.3f}", f"{100 * h['cifar_test_zero_shot']:.2f}%"]
        for h in history
    ]  # fmt: skip
    body = (
        f"Checkpoint `{checkpoint.name}` ({checkpoint.stat().st_size / 1e6:.1f} MB): "
        f"{meta['epochs']} epochs over CIFAR-10 train (batch {meta['batch_size']}, AdamW one-cycle "
        f"lr {meta['lr']}, seed {meta['seed']}), Flickr8k fit split "
        f"({meta['flickr_fit_photos']} photos, {meta['flickr_fit_captions']} captions) mixed into "
        f"the last {meta['flickr_epochs']}. Wall time {meta['train_minutes']} min on this machine "
        "(decoding the data sets and embedding the captions included).\n\n"
        + markdown_table(
            ["epoch", "Flickr mixed in", "last-batch loss", "CIFAR-10 test zero-shot"], rows
        )
        + "\n\nThe per-epoch accuracy is the script's own quick check (training caption templates, "
        "'car' for automobile); the reported figures come from `clipsearch eval` in quality.md."
    )
    return write_result("reference_training", "Training clipsearch-mini", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--flickr-epochs", type=int, default=4, help="last N epochs mix Flickr in")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--flickr-batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=mini.CHECKPOINT)
    parser.add_argument("--limit", type=int, default=0, help="CIFAR train images (smoke runs)")
    parser.add_argument("--report", type=Path, help="only write the report of this checkpoint")
    args = parser.parse_args()
    if args.report:
        meta = torch.load(args.report, map_location="cpu", weights_only=True)["meta"]
        print(f"written to {write_report(meta, args.report)}")
        return

    started = time.perf_counter()
    keep_freed_memory()
    torch.set_num_threads(2)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    model = mini.MiniCLIP()
    model.text.requires_grad_(False).eval()
    model.visual = model.visual.to(memory_format=torch.channels_last)
    # The photo-caption loss gets its own temperature: sharing one with the class loss
    # dragged it down when the photos came in, and cost CIFAR accuracy.
    pair_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    names = [CAPTION_NAMES.get(c, c) for c in datasets.CIFAR_CLASSES]
    banned = datasets.novel_words()
    template_texts = [t.format(n) for t in TEMPLATES for n in names]
    assert not any(datasets.mentions_novel_word(t, banned) for t in template_texts)
    class_bank = embed_texts(model, template_texts).view(len(TEMPLATES), len(names), -1)
    class_mean = F.normalize(class_bank.mean(0), dim=-1)
    log(f"embedded {len(template_texts)} class captions")

    train_x, train_y = load_cifar("train")
    if args.limit:
        keep = torch.randperm(len(train_x))[: args.limit]
        train_x, train_y = train_x[keep], train_y[keep]
    test_x, test_y = load_cifar("test")
    log(f"CIFAR-10: {len(train_x)} train, {len(test_x)} test images decoded")
    flickr_x, flickr_caps = load_flickr_fit()
    flat_caps = [c for caps in flickr_caps for c in caps]
    first_caption = np.cumsum([0] + [len(caps) for caps in flickr_caps])
    cap_bank = embed_texts(model, flat_caps)
    log(f"Flickr8k fit: {len(flickr_x)} photos, {len(flat_caps)} captions embedded")

    steps_per_epoch = len(train_x) // args.batch_size
    decay, no_decay = [], []
    for p in model.visual.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": 5e-4},
            {"params": [*no_decay, model.logit_scale, pair_scale], "weight_decay": 0.0},
        ],
        lr=args.lr,
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.2
    )
    history = []
    for epoch in range(args.epochs):
        with_flickr = epoch >= args.epochs - args.flickr_epochs
        order = torch.randperm(len(train_x))
        epoch_start = time.perf_counter()
        for step in range(steps_per_epoch):
            idx = order[step * args.batch_size : (step + 1) * args.batch_size]
            pixels = normalise_pixels(augment(train_x[idx], pad=4))
            z = F.normalize(model.encode_image(pixels), dim=-1)
            scale = model.logit_scale.clamp(max=math.log(100)).exp()
            templates = torch.randint(0, len(TEMPLATES), (len(idx),))
            logits = scale * torch.einsum("bd,bcd->bc", z, class_bank[templates])
            loss = F.cross_entropy(logits, train_y[idx], label_smoothing=0.1)
            if with_flickr:
                pick = torch.randperm(len(flickr_x))[: args.flickr_batch]
                fz = F.normalize(
                    model.encode_image(normalise_pixels(augment(flickr_x[pick], 0))), dim=-1
                )
                chosen = [  # one random allowed caption per photo
                    int(first_caption[i]) + random.randrange(len(flickr_caps[i]))
                    for i in pick.tolist()
                ]
                caps = cap_bank[chosen]
                pair_logits = pair_scale.clamp(max=math.log(100)).exp() * fz @ caps.T
                target = torch.arange(len(pick))
                loss = loss + 0.5 * (
                    F.cross_entropy(pair_logits, target) + F.cross_entropy(pair_logits.T, target)
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        accuracy = cifar_zero_shot(model, test_x, test_y, class_mean)
        history.append(
            {
                "epoch": epoch + 1,
                "loss": round(float(loss.detach()), 4),
                "cifar_test_zero_shot": accuracy,
            }
        )
        log(
            f"epoch {epoch + 1}/{args.epochs} ({time.perf_counter() - epoch_start:.0f} s, "
            f"flickr={'on' if with_flickr else 'off'}): loss {float(loss.detach()):.3f}, "
            f"CIFAR-10 test zero-shot {accuracy:.2%}, temperature {1 / float(scale):.4f}"
        )

    minutes = (time.perf_counter() - started) / 60
    meta = {
        "epochs": args.epochs, "flickr_epochs": args.flickr_epochs, "seed": args.seed,
        "lr": args.lr, "batch_size": args.batch_size, "train_minutes": round(minutes, 1),
        "history": history, "templates": TEMPLATES, "caption_names": names,
        "flickr_fit_photos": len(flickr_x), "flickr_fit_captions": len(flat_caps),
    }  # fmt: skip
    mini.save_checkpoint(model, args.out, meta)
    log(f"saved {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) after {minutes:.1f} min")
    if args.out == mini.CHECKPOINT:
        log(f"report: {write_report(meta, args.out)}")
    print(json.dumps({k: meta[k] for k in ("train_minutes", "history")}, indent=1))


if __name__ == "__main__":
    main()
