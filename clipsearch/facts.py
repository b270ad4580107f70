"""Plain records the `Index` returns about itself: what an `add` did, what the index holds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from clipsearch.errors import ModelMismatchError
from clipsearch.models.base import ModelInfo
from clipsearch.models.runtime.choice import RuntimeChoice


@dataclass(frozen=True)
class Skip:
    """A file left out of the index, and why (in words a user can act on)."""

    path: str
    reason: str


@dataclass
class IndexSummary:
    """What one `add` run did."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    moved: int = 0
    unchanged: int = 0
    encoded: int = 0  # images that went through the model
    sidecars: int = 0  # .txt / .xmp descriptions (re-)indexed as texts
    videos: int = 0  # of the added and updated items, videos
    keyframes: int = 0  # the keyframes those videos were indexed by
    skipped: list[Skip] = field(default_factory=list)
    #: With `ocr`: images read by Tesseract, passed over by the pre-check, holding words.
    text_in_photos: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["text_in_photos"] is None:
            del out["text_in_photos"]  # a run without --ocr reports what it always did
        return out


@dataclass
class SidecarSummary:
    """What keeping the sidecar descriptions in step did, in one `add` run."""

    added: int = 0
    removed: int = 0
    skipped: list[Skip] = field(default_factory=list)


@dataclass(frozen=True)
class Progress:
    """Where an `add` run is: scanning, embedding (`done` of `total` files), finishing."""

    phase: str
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class IndexStats:
    directory: str  # the index folder, or the database URL without its password
    store: str  # sqlite | postgresql
    cache_dir: str  # where the FAISS caches are
    count: int  # items: photos and videos
    videos: int
    keyframes: int  # videos' keyframes, each a vector of its own in the search
    texts: int
    model: str | None
    model_identity: str | None
    dim: int | None
    adapter: str | None  # the active adapter, if any (`clipsearch adapters list`)
    index_type: str
    vector_dtype: str  # how the database stores the image vectors: float32 or float16
    image_vectors: str  # what made them: fp32 (any runtime) or int8-RUNTIME
    faiss_gpus: int
    database_bytes: int
    vector_index_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recorded_info(meta: dict[str, str]) -> ModelInfo | None:
    """The model an index's meta table records, if any."""
    if "model_identity" not in meta:
        return None
    return ModelInfo(meta["model_spec"], meta["model_identity"], int(meta["dim"]))


def check_model(label: str, recorded: ModelInfo, asked: str | None, spec: str | None) -> None:
    """An index opened with another model than it was built with is an error saying which."""
    if asked is not None and asked != recorded.identity:
        raise ModelMismatchError(
            f"the index at {label} was built with model {recorded.spec!r} "
            f"({recorded.identity}, {recorded.dim} dims), not {spec or asked!r}; "
            f"search it with --model {recorded.spec!r} (or leave --model out), or "
            "build a separate index for the other model with --db"
        )


#: The meta key recording what kind of image vectors an index holds (see
#: `clipsearch.models.runtime.choice`); an index without it holds fp32 vectors.
IMAGE_VECTORS = "image_vectors"


def runtime_choice(
    meta: dict[str, str], runtime: str | None, precision: str | None
) -> RuntimeChoice:
    """How to run the model for an index: as asked, else as its vectors were made (an int8
    index keeps its runtime and precision), else, for a new index, auto at auto precision
    (int8 where measured as good and faster: `models.runtime.auto_int8`), else auto fp32."""
    new = IMAGE_VECTORS not in meta and "model_identity" not in meta
    if new and precision in (None, "auto") and runtime in (None, "auto", "onnx"):
        return RuntimeChoice.parse(runtime, "auto")
    if precision == "auto":
        precision = None  # an index that has vectors keeps their kind
    recorded = meta.get(IMAGE_VECTORS, "fp32")
    made_precision, _, made_runtime = recorded.partition("-")
    if precision is None and runtime in (None, made_runtime or None):
        precision, runtime = made_precision, runtime or made_runtime or None
    return RuntimeChoice.parse(runtime, precision)


def check_vectors_kind(label: str, meta: dict[str, str], kind: str) -> None:
    """Vectors of another kind than the index holds are an error naming the right options."""
    recorded = meta.get(IMAGE_VECTORS, "fp32")
    if recorded == kind:
        return
    precision, _, runtime = recorded.partition("-")
    how = f"--runtime {runtime} --precision {precision}" if runtime else "--precision fp32"
    raise ModelMismatchError(
        f"the index at {label} holds {recorded} image vectors, and this run would add {kind} "
        f"ones, which rank differently; add photos with {how} (or leave both options out), "
        "or build a separate index with --db"
    )
