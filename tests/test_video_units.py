"""The pure parts of videos and questions: the scene cutter, keyframe selection, moments,
and how questions become statements."""

from __future__ import annotations

import itertools

import numpy as np
from PIL import Image

from clipsearch.asking import (
    answer_yes_no,
    choice_templates,
    default_answers,
    is_yes_no,
    yes_no_statement,
)
from clipsearch.search.moments import moment_of
from clipsearch.search.prompts import TEMPLATES
from clipsearch.storage.frames import VideoFrames
from clipsearch.video import clock
from clipsearch.video.keyframes import _means, frame_crops
from clipsearch.video.scenes import SceneCutter, SceneRules
from clipsearch.video.select import choose_frames

FPS = 6.0


def _cut_times(signatures: list[np.ndarray], rules: SceneRules | None = None) -> list[float]:
    cutter = SceneCutter(rules)
    return [n / FPS for n, s in enumerate(signatures) if cutter.take(n / FPS, s)]


def test_a_cut_is_taken_once_the_picture_settles_and_a_fade_once_it_ends() -> None:
    a, b, c = (np.full((18, 32, 3), v, dtype=np.float32) for v in (0.1, 0.6, 0.3))
    cut = [a] * 12 + [b] * 12  # a cut at frame 12 (2.0 s)
    first, after = _cut_times(cut)
    assert first == 0.0 and 2.0 < after <= 2.6  # after the cut, once the picture is still
    fade = [a] * 12 + [a + (c - a) * i / 12 for i in range(1, 13)] + [c] * 12  # 2 s fade
    times = _cut_times(fade)
    assert len(times) == 2 and 2.0 < times[1] <= 4.5  # one keyframe for the new scene


def test_spacing_rules_bound_the_keyframes() -> None:
    still = [np.zeros((18, 32, 3), dtype=np.float32)] * int(100 * FPS)
    assert _cut_times(still, SceneRules(max_spacing_s=30.0)) == [0.0, 30.0, 60.0, 90.0]
    flicker = [np.full((18, 32, 3), n % 2, dtype=np.float32) for n in range(int(10 * FPS))]
    times = _cut_times(flicker, SceneRules(min_spacing_s=2.0, settle_s=0.5))
    assert all(b - a >= 2.0 for a, b in itertools.pairwise(times))


def test_choose_frames_covers_distinct_scenes_before_repeating_one() -> None:
    rng = np.random.default_rng(0)
    scenes = rng.normal(size=(4, 32)).astype(np.float32)
    # scene 0 is long (six near-identical keyframes), the others have one each
    rows = [scenes[0] + 0.05 * rng.normal(size=32) for _ in range(6)] + list(scenes[1:])
    vectors = np.stack(rows).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    times = np.array([0, 2, 4, 6, 8, 10, 12, 14, 16], dtype=np.float64)
    chosen = choose_frames(times, vectors, 4, duration=18.0)
    assert chosen == sorted(chosen) and len(chosen) == 4
    assert {6, 7, 8} <= set(chosen)  # every short scene, and one frame of the long one
    query = scenes[2] / np.linalg.norm(scenes[2])
    assert 7 in choose_frames(times, vectors, 1, duration=18.0, query=query)


def test_a_moment_is_the_best_keyframe_and_its_matching_neighbours() -> None:
    video = VideoFrames(40.0, [1, 2, 3, 4, 5], [0.0, 10.0, 20.0, 25.0, 30.0])
    moment = moment_of(video, [0.1, 0.2, 0.9, 0.85, 0.1])
    assert moment.time == 20.0 and moment.span == (20.0, 30.0)
    assert moment_of(video, [0.1, 0.1, 0.1, 0.1, 0.8]).span == (30.0, 40.0)
    assert clock(83.9) == "00:01:23" and clock(7322) == "02:02:02"


def test_questions_become_statements() -> None:
    assert is_yes_no("Is there a dog?", None) and is_yes_no("what?", ["Yes", "no"])
    assert not is_yes_no("what animal is this?", None)
    assert yes_no_statement("is there a dog?") == "a photo of a dog."
    assert yes_no_statement("Is this a beach?") == "a photo of a beach."
    assert yes_no_statement("does the man wear a hat?") == "a photo of the man wear a hat."
    assert choice_templates("what is in this picture?") == list(TEMPLATES)
    assert "the car is {}." in choice_templates("What colour is the car?")
    assert "a photo of the man holding a {}." in choice_templates("what is the man holding?")
    assert choice_templates("what animal is this?")[-1] == "a photo of a {}, a type of animal."
    assert default_answers("how many dogs are there?")[:2] == ["one", "two"]
    assert "red" in (default_answers("what color is the bus?") or [])
    assert default_answers("what animal is this?") is None


def test_yes_no_follows_the_contrast_with_the_collection() -> None:
    rng = np.random.default_rng(1)
    statement = rng.normal(size=16).astype(np.float32)
    statement /= np.linalg.norm(statement)
    others = rng.normal(size=(50, 16)).astype(np.float32)
    others /= np.linalg.norm(others, axis=1, keepdims=True)

    def encode(texts: list[str]) -> np.ndarray:
        return np.stack([statement for _ in texts])

    assert answer_yes_no("is there a dog?", statement, others, encode).best == "yes"
    assert answer_yes_no("is there a dog?", -statement, others, encode).best == "no"


def test_a_wide_or_tall_frame_is_shown_to_the_model_as_three_squares() -> None:
    wide = Image.new("RGB", (160, 90))
    for x in range(160):
        wide.putpixel((x, 0), (x, 0, 0))  # each column marked by its x
    crops = frame_crops(wide)
    assert [c.size for c in crops] == [(90, 90)] * 3
    assert [c.getpixel((0, 0))[0] for c in crops] == [0, 35, 70]  # start, centre, end
    assert [c.size for c in frame_crops(Image.new("RGB", (90, 160)))] == [(90, 90)] * 3
    assert len(frame_crops(Image.new("RGB", (640, 480)))) == 3  # 4:3 too
    square = Image.new("RGB", (100, 104))
    assert frame_crops(square) == [square]  # nearly square: as it is
    vectors = np.array([[1, 0], [1, 0], [0, 1], [3, 4]], dtype=np.float32)
    np.testing.assert_allclose(_means(vectors, [3, 1]), [[2 / 5**0.5, 1 / 5**0.5], [0.6, 0.8]],
                               atol=1e-6)  # fmt: skip
