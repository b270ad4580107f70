"""Comparing rankings made by different runtimes: equal but for ties within float noise."""

from __future__ import annotations

#: How far a hit's score (a cosine) may move between fp32 runtimes: measured at most 2.4e-7
#: over test_runtimes.py's 40 photos x 4 queries (bf16 moved them 1e-3). Two hits can only
#: trade places where their scores are within twice this; further apart, the order is the
#: maths'.
SCORE_TOLERANCE = 1e-5


def assert_same_ranking(
    ranked: list[tuple[int, float]], reference: dict[int, float], tolerance: float
) -> None:
    """`ranked` (id, score), best first, is a top-k of `reference` (every id's score in the
    reference run) up to the noise `tolerance` allows: each score within it of the
    reference's, hits in the reference's order except where their reference scores are within
    2 x tolerance, and no hit left out that the reference scores more than that above one
    kept."""
    assert len({hit for hit, _ in ranked}) == len(ranked), f"a hit twice in {ranked}"
    for hit, score in ranked:
        assert abs(score - reference[hit]) <= tolerance, (hit, score, reference[hit])
    kept = [reference[hit] for hit, _ in ranked]
    for i, (hit, _) in enumerate(ranked):
        below = [
            other for other, _ in ranked[i + 1 :] if kept[i] < reference[other] - 2 * tolerance
        ]
        assert not below, f"{hit} ranked above {below}, which score higher beyond ties"
    left_out = {h: s for h, s in reference.items() if h not in dict(ranked)}
    floor = min(kept)
    missed = {h: s for h, s in left_out.items() if s > floor + 2 * tolerance}
    assert not missed, f"left out {missed}, above the last kept score {floor} beyond ties"
