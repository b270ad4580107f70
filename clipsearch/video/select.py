"""Pick k frames that stand for a video: representative of what it shows, diverse, and
spread over its timeline; optionally drawn towards a query.

Greedy facility location: each frame i (weighted by the share of the video it stands for,
the time until the next keyframe) is *covered* by a chosen frame s as much as

    cover(i, s) = exp((cos(v_i, v_s) - 1) / h)
                  * (1 - TIME_SHARE + TIME_SHARE * exp(-|t_i - t_s| / tau))

with tau the video's duration over k and h = SHARPNESS times the median cosine distance
between the video's frames (models differ in how far apart two unrelated pictures embed,
so the scale is the video's own); the next frame chosen is the one that adds the most
coverage (plus, with a query, `QUERY_WEIGHT` times its relevance to the query, scaled 0-1
over the video's frames, over k). Coverage is submodular, so greedy gets at least 63% of
the best possible. The same choice caps the keyframes kept per video at indexing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The cosine distance at which a frame covers another by 1/e, as a share of the median
#: distance between the video's frames. It and TIME_SHARE were chosen on videos of the
#: Flickr photos of the fit split (benchmarks/video.py reports on the validation split).
SHARPNESS = 0.75
TIME_SHARE = 0.25  # how much of coverage the timeline decides
QUERY_WEIGHT = 1.0
#: Above this many frames, an even subsample is chosen from (the n x n similarities, in
#: float32: 16 MiB each at this size).
MAX_FRAMES = 2048


def choose_frames(
    times: np.ndarray[Any, Any],
    vectors: np.ndarray[Any, Any],
    k: int,
    duration: float | None = None,
    query: np.ndarray[Any, Any] | None = None,
) -> list[int]:
    """Positions of k frames (all of them if k >= their count), in time order."""
    n = len(times)
    if k >= n:
        return list(range(n))
    if k <= 0:
        return []
    pool = np.arange(n)
    if n > MAX_FRAMES:
        pool = np.unique(np.linspace(0, n - 1, MAX_FRAMES).round().astype(int))
    t = np.asarray(times, dtype=np.float64)[pool]
    v = np.asarray(vectors, dtype=np.float32)[pool]
    end = max(float(duration or 0.0), float(t[-1]) + 1e-3)
    weights = np.diff(np.append(t, end)).clip(min=1e-3).astype(np.float32)
    weights /= weights.sum()
    tau = max(end / k, 1e-3)
    cover = v @ v.T  # cosines, then cover[i, s] in place
    spread = float(np.median(1.0 - cover[np.triu_indices(len(pool), 1)])) if len(pool) > 1 else 1.0
    cover -= 1.0
    cover /= np.float32(SHARPNESS * max(spread, 1e-3))
    np.exp(cover, out=cover)
    near = np.abs(t[:, None] - t[None, :]).astype(np.float32)
    near = np.exp(-near / np.float32(tau)) * np.float32(TIME_SHARE) + np.float32(1 - TIME_SHARE)
    cover *= near
    del near
    bonus = np.zeros(len(pool), dtype=np.float32)
    if query is not None:
        relevance = v @ np.asarray(query, dtype=np.float32)
        spread = float(relevance.max() - relevance.min())
        if spread > 0:
            bonus = QUERY_WEIGHT * (relevance - relevance.min()) / spread / k
    covered = np.zeros(len(pool), dtype=np.float32)
    chosen: list[int] = []
    for _ in range(k):
        gains = (weights[:, None] * np.maximum(cover - covered[:, None], 0.0)).sum(axis=0) + bonus
        gains[chosen] = -np.inf
        best = int(np.argmax(gains))
        chosen.append(best)
        covered = np.maximum(covered, cover[:, best])
    return sorted(int(pool[c]) for c in chosen)
