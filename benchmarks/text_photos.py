"""Generated photos with words in them, for the OCR benchmark: signs (a plate on a plain
ground), labels, screenshots (lines of dark text on white) and signs on real Flickr photos;
fonts from the machine's DejaVu and Liberation families, letter sizes 20-64 px, turned up to
12 degrees (not screenshots), with Gaussian noise. Words are single-word terms of the shipped
vocabulary. Deterministic for a seed."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_DIR = Path("/usr/share/fonts/truetype")
KINDS = ("sign", "label", "screenshot", "sign-on-photo")
SIZES = (20, 28, 36, 48, 64)
NORMAL_SIZES = (28, 36, 48)  # what the "normal sizes" are taken to be
SIDE = (640, 480)


@dataclass(frozen=True)
class TextPhoto:
    name: str
    words: list[str]
    kind: str
    size: int
    angle: float
    noise: float


def fonts() -> list[Path]:
    return sorted(
        p for p in FONT_DIR.rglob("*.ttf")
        if p.parent.name in ("dejavu", "liberation") and "Oblique" not in p.name
        and "Italic" not in p.name and "Condensed" not in p.name
    )  # fmt: skip


def words_pool(vocabulary: Path) -> list[str]:
    terms = {t.strip() for t in vocabulary.read_text().splitlines() if not t.startswith("#")}
    return sorted(t for t in terms if t.isalpha() and t.islower() and 4 <= len(t) <= 10)


def render(
    spec: TextPhoto, font: Path, rng: np.random.Generator, photo: Path | None
) -> Image.Image:
    width, height = SIDE
    if photo is not None:
        image = Image.open(photo).convert("RGB").resize(SIDE)
    elif spec.kind == "screenshot":
        image = Image.new("RGB", SIDE, (250, 250, 250))
    else:
        image = Image.new("RGB", SIDE, tuple(int(c) for c in rng.integers(0, 256, 3)))
    face = ImageFont.truetype(str(font), spec.size)
    layer = Image.new("RGBA", SIDE, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    # Words per line: as many as fit inside the frame with a margin (the turned plate too).
    per_line = 3 if spec.kind == "screenshot" else len(spec.words)
    while True:
        text = "\n".join(" ".join(spec.words[i : i + per_line])
                         for i in range(0, len(spec.words), per_line))  # fmt: skip
        box = draw.multiline_textbbox((0, 0), text, font=face, spacing=spec.size // 3)
        if box[2] - box[0] <= width - 100 or per_line == 1:
            break
        per_line -= 1
    x = max(10, (width - (box[2] - box[0])) // 2)
    y = max(10, (height - (box[3] - box[1])) // 2)
    ink: tuple[int, ...] = (20, 20, 20, 255)
    if spec.kind != "screenshot":
        light = rng.random() < 0.5
        plate = (245, 245, 235, 255) if light else (30, 60, 120, 255)
        ink = (20, 20, 20, 255) if light else (250, 250, 250, 255)
        draw.rectangle((x - 14, y - 14, x + box[2] - box[0] + 14, y + box[3] - box[1] + 14),
                       fill=plate)  # fmt: skip
    draw.multiline_text((x, y - box[1]), text, font=face, fill=ink, spacing=spec.size // 3)
    layer = layer.rotate(
        spec.angle, resample=Image.Resampling.BICUBIC, center=(width / 2, height / 2)
    )
    image.paste(layer, (0, 0), layer)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, spec.noise, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def generate(
    dest: Path, count: int, seed: int, vocabulary: Path, photos: list[Path]
) -> list[TextPhoto]:
    """`count` photos into `dest` (JPEG) and their truth into dest/truth.json."""
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pool, faces = words_pool(vocabulary), fonts()
    specs = []
    for n in range(count):
        kind = KINDS[n % len(KINDS)]
        how_many = 6 if kind == "screenshot" else int(rng.integers(1, 4))
        words = [str(w) for w in rng.choice(pool, size=how_many, replace=False)]
        spec = TextPhoto(
            f"text_{n:04d}.jpg", words, kind, int(rng.choice(SIZES)),
            0.0 if kind == "screenshot" else round(float(rng.uniform(-12, 12)), 1),
            float(rng.choice([0.0, 6.0, 12.0])),
        )  # fmt: skip
        font = faces[int(rng.integers(len(faces)))]
        photo = photos[n % len(photos)] if kind == "sign-on-photo" else None
        render(spec, font, rng, photo).save(dest / spec.name, quality=90)
        specs.append(spec)
    (dest / "truth.json").write_text(json.dumps([asdict(s) for s in specs], indent=1))
    return specs
