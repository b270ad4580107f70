"""Questions about a picture, answered zero-shot in the shared space (no VQA model).

- *Choice* questions (what / which / who / where / how many, or any question given
  `answers`): each candidate answer is put into statements shaped by the question ("what
  colour is the car?" + "red" -> "a photo of a red car.", "the car is red."), the
  statements' embeddings are ensembled, and the candidates are ranked by cosine to the
  picture; probabilities are a softmax at the scale the model was trained with (its
  `logit_scale`: about 100 for OpenAI's CLIP, 11.6 for clipsearch-mini; `TEMPERATURE` for
  a model that has none). A question that names no subject
  ("what is in this picture?") uses the zero-shot classification templates
  (`search.prompts.TEMPLATES`), so it answers exactly as zero-shot classification does.
  Without `answers`, the candidates are basic colours for a colour question, numbers for
  "how many", else the tag vocabulary's terms nearest to the picture (those under the
  question's category in the tag tree, for "what animal ...", "which vehicle ...").
- *Yes/no* questions (is / are / does / can ... ?): the question becomes one statement ("is
  there a dog?" -> "a photo of a dog."), scored against a *calibrated contrast*: how far the
  picture's cosine stands above the same statement's cosines over a sample of the index's
  images, in standard deviations (z). p(yes) = sigmoid((z - YES_Z) / YES_SCALE); "not sure"
  when |z - YES_Z| < UNSURE_Z. The constants were set on questions made from the captions of
  the Flickr photos the reference model fitted on (`benchmarks/ask.py --fit`), not on the
  ones it reports.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from clipsearch.errors import QueryError
from clipsearch.search.prompts import TEMPLATES, ensemble
from clipsearch.search.relevance import sample_ids
from clipsearch.search.tag_tree import shipped as shipped_tree
from clipsearch.texts import BUILTIN_VOCABULARY, TextCollection

if TYPE_CHECKING:
    from clipsearch.models import Encoder
    from clipsearch.storage.db import Database

#: Softmax scale over answer cosines for a model that records none (CLIP's trained one).
TEMPERATURE = 100.0
YES_Z = 0.5
YES_SCALE = 0.5
UNSURE_Z = 0.25
#: A yes/no question needs at least this many images in the index to compare with.
MIN_REFERENCE_IMAGES = 20

_AUX = (
    "is", "are", "was", "were", "does", "do", "did", "can", "could", "has", "have", "will",
    "would", "should",
)  # fmt: skip
_HOW_MANY = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_COLOURS = (
    "black", "white", "grey", "red", "orange", "yellow", "green", "blue", "purple", "pink",
    "brown",
)  # fmt: skip
_THIS = r"(?:this|that|it|these|those|here|there|the (?:picture|photo|image|scene))"


@dataclass(frozen=True)
class Answer:
    answer: str
    probability: float
    score: float  # the cosine (choice) or z (yes/no) it was ranked by


@dataclass(frozen=True)
class Answers:
    question: str
    kind: str  # "choice" | "yes/no"
    answers: list[Answer]  # best first
    #: The answer to give: the best one, or "not sure" for an unclear yes/no.
    best: str
    statements: list[str] = field(default_factory=list)  # what was scored, for explain

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "kind": self.kind,
            "best": self.best,
            "answers": [
                {
                    "answer": a.answer,
                    "probability": round(a.probability, 4),
                    "score": round(a.score, 4),
                }
                for a in self.answers
            ],
        }


def _clean(question: str) -> str:
    return " ".join(question.strip().rstrip("?").split())


def is_yes_no(question: str, answers: Sequence[str] | None) -> bool:
    if answers:
        return sorted(a.strip().lower() for a in answers) == ["no", "yes"]
    first = _clean(question).lower().split(" ", 1)[0]
    return first in _AUX


def choice_templates(question: str) -> list[str]:
    """Statement templates ({} = a candidate answer) for a choice question."""
    q = _clean(question).lower()
    if m := re.match(r"(?:what|which) colou?r (?:is|are) (?:the |this |that |a )?(.+)", q):
        thing = m.group(1)
        return [f"a photo of a {{}} {thing}.", f"the {thing} is {{}}.", f"a {{}} {thing}."]
    if m := re.match(r"what (?:is|are) (?:the |this |that |a )?(.+?) (holding|wearing|eating|"
                     r"carrying|riding|playing|playing with|doing)$", q):  # fmt: skip
        thing, verb = m.groups()
        if verb == "doing":
            return [f"a photo of the {thing} {{}}.", f"the {thing} is {{}}."]
        return [f"a photo of the {thing} {verb} a {{}}.", f"the {thing} is {verb} a {{}}."]
    if m := re.match(r"how many (.+?)(?: (?:are|is) (?:there|in|on|visible).*)?$", q):
        thing = m.group(1)
        return [f"a photo of {{}} {thing}.", f"there are {{}} {thing}."]
    if re.match(r"where (?:is|are|was|were) ", q):
        return ["a photo taken at a {}.", "a photo of a {}.", "a photo taken in the {}."]
    if re.match(rf"(?:what|which|who)(?: (?:is|are) (?:in|on) {_THIS}| (?:is|are) {_THIS}|"
                r" do you see| can you see)?$", q):  # fmt: skip
        return list(TEMPLATES)  # no subject named: zero-shot classification
    if m := re.match(rf"(?:what|which) (?:kind of |type of |sort of )?(\w+) (?:is|are) {_THIS}",
                     q):  # fmt: skip
        kind = m.group(1)
        return [*TEMPLATES, f"a photo of a {{}}, a type of {kind}."]
    return list(TEMPLATES)


def default_answers(question: str) -> list[str] | None:
    """Candidates a question implies by itself (how many -> numbers, what colour -> basic
    colours), else None."""
    q = _clean(question).lower()
    if q.startswith("how many"):
        return list(_HOW_MANY)
    if re.match(r"(?:what|which) colou?rs? ", q):
        return list(_COLOURS)
    return None


def yes_no_statement(question: str) -> str:
    """The statement a yes/no question asks about ("is there a dog?" -> "a photo of a dog.")."""
    q = _clean(question)
    words = q.split(" ")
    lower = [w.lower() for w in words]
    if len(words) >= 3 and lower[1] == "there":  # is there a dog / are there people
        return f"a photo of {' '.join(words[2:])}."
    if len(words) >= 3 and lower[1] in ("this", "that", "it") and lower[0] in ("is", "was"):
        return f"a photo of {' '.join(words[2:])}."  # is this a beach -> a photo of a beach
    if lower[0] in ("does", "do", "did", "can", "could", "will", "would", "should"):
        return f"a photo of {' '.join(words[1:])}."  # does the man wear a hat
    if lower[0] in ("is", "are", "was", "were", "has", "have") and len(words) >= 2:
        return f"a photo of {' '.join(words[1:])}."  # is the man smiling
    return f"a photo of {q}."


def _softmax(scores: np.ndarray[Any, Any], scale: float) -> np.ndarray[Any, Any]:
    logits = (scores - scores.max()) * scale
    weights = np.exp(logits)
    return np.asarray(weights / weights.sum())


def answer_choice(
    question: str,
    picture: np.ndarray[Any, Any],
    answers: Sequence[str],
    encode_texts: Callable[[list[str]], np.ndarray[Any, Any]],
    top: int = 5,
    scale: float = TEMPERATURE,
) -> Answers:
    """Rank candidate answers for a picture (a unit vector in the space of `encode_texts`);
    probabilities are a softmax of their cosines times `scale`."""
    if not answers:
        raise QueryError("give at least one candidate answer")
    templates = choice_templates(question)
    statements = [t.format(a.strip().replace("_", " ")) for a in answers for t in templates]
    encoded = np.asarray(encode_texts(statements), dtype=np.float32)
    vectors = np.stack([ensemble(v) for v in encoded.reshape(len(answers), len(templates), -1)])
    scores = vectors @ np.asarray(picture, dtype=np.float32)
    probabilities = _softmax(scores, scale)
    order = np.argsort(-scores, kind="stable")[:top]
    ranked = [Answer(answers[i].strip(), float(probabilities[i]), float(scores[i])) for i in order]
    return Answers(question, "choice", ranked, ranked[0].answer, statements[: len(templates)])


def answer_yes_no(
    question: str,
    picture: np.ndarray[Any, Any],
    reference: np.ndarray[Any, Any],
    encode_texts: Callable[[list[str]], np.ndarray[Any, Any]],
) -> Answers:
    """Yes, no or not sure, from how the picture scores the question's statement against
    `reference` pictures (unit vectors: the index's images, a sample of them)."""
    if len(reference) < MIN_REFERENCE_IMAGES:
        raise QueryError(
            f"a yes/no question is answered by comparing the picture with an index's photos "
            f"(at least {MIN_REFERENCE_IMAGES}; this one has {len(reference)}): point --db at "
            "an index of your photos, or give candidate answers with --answers"
        )
    statement = yes_no_statement(question)
    vector = np.asarray(encode_texts([statement]), dtype=np.float32)[0]
    vector /= max(float(np.linalg.norm(vector)), 1e-12)
    others = np.asarray(reference, dtype=np.float32) @ vector
    z = (float(picture @ vector) - float(others.mean())) / max(float(others.std()), 1e-6)
    yes = 1.0 / (1.0 + math.exp(-(z - YES_Z) / YES_SCALE))
    ranked = sorted(
        [Answer("yes", yes, z), Answer("no", 1.0 - yes, z)], key=lambda a: -a.probability
    )
    best = "not sure" if abs(z - YES_Z) < UNSURE_Z else ranked[0].answer
    return Answers(question, "yes/no", ranked, best, [statement])


class AskHost(Protocol):
    """What answering a question needs of an index (an `Index`)."""

    db: Database

    @property
    def texts(self) -> TextCollection: ...

    def image_vectors(self, ids: Sequence[int]) -> np.ndarray[Any, Any]: ...

    def embed_image_file(self, path: Path) -> np.ndarray[Any, Any]: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray[Any, Any]: ...

    @property
    def encoder(self) -> Encoder: ...


#: Vocabulary terms nearest to the picture that a question's statements then rank.
VOCABULARY_CANDIDATES = 30
#: More than the shipped vocabulary holds: every term, ranked, before a category filter.
VOCABULARY_ALL = 4000


def asked_category(question: str) -> set[str] | None:
    """The vocabulary terms a question's category admits ("what animal ..." -> every term
    under "animal" in the tag tree), or None when it names no known category."""
    m = re.match(
        r"(?:what|which) (?:kind of |type of |sort of )?([a-z]+)", _clean(question).lower()
    )
    if m is None:
        return None
    word = m.group(1)
    tree = shipped_tree()
    for name in (word, word[:-1] if word.endswith("s") else word):
        below = tree.below(name)
        if len(below) > 2:
            return below
    return None


def picture_vector(host: AskHost, image: int | str | os.PathLike[str]) -> np.ndarray[Any, Any]:
    """An indexed item (by id or path: its stored vector) or any image file, in the space."""
    if isinstance(image, int):
        return np.asarray(host.image_vectors([image])[0])
    path = os.path.abspath(Path(image).expanduser())
    known = host.db.ids_for_paths([path]).get(path)
    if known is not None:
        return np.asarray(host.image_vectors([known])[0])
    if not os.path.isfile(path):
        raise QueryError(f"no such image file: {path}")
    return host.embed_image_file(Path(path))


def ask(
    host: AskHost,
    image: int | str | os.PathLike[str],
    question: str,
    answers: Sequence[str] | None = None,
    top: int = 5,
) -> Answers:
    """Answer a question about a picture; see the module's notes."""
    if not _clean(question):
        raise QueryError("ask a question, e.g. 'what animal is this?'")
    picture = picture_vector(host, image)
    if is_yes_no(question, answers):
        reference = host.image_vectors(sample_ids(host.db.all_ids()))
        return answer_yes_no(question, picture, reference, host.embed_texts)
    candidates = [a for a in (answers or default_answers(question) or []) if a.strip()]
    if not candidates:
        host.texts.add_builtin_vocabulary()
        admitted = asked_category(question)
        depth = VOCABULARY_ALL if admitted else VOCABULARY_CANDIDATES
        hits = host.texts.search_vectors(picture[None, :], k=depth, source=BUILTIN_VOCABULARY)[0]
        terms = [h.key or h.text for h in hits]
        if admitted:
            terms = [t for t in terms if t.lower() in admitted] or terms
        candidates = terms[:VOCABULARY_CANDIDATES]
    scale = getattr(host.encoder, "logit_scale", None) or TEMPERATURE
    return answer_choice(question, picture, candidates, host.embed_texts, top, float(scale))
