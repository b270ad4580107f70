"""Where in a video a query matches: the best keyframe's time, and the span of the
keyframes around it that match nearly as well.

A keyframe stands for the video from its time until the next keyframe's. The span grows
from the best keyframe to its neighbours, in both directions, while their score is within
`SPAN_SHARE` of the way from the best score down to the video's median score: a relative
rule, as the scale of scores differs from model to model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipsearch.storage.frames import VideoFrames
from clipsearch.storage.vectors import VectorTable

SPAN_SHARE = 0.3


@dataclass(frozen=True)
class Moment:
    time: float  # seconds: the best keyframe's
    span: tuple[float, float]  # seconds: where the matching keyframes stand, start to end


def moment_of(video: VideoFrames, scores: Sequence[float]) -> Moment:
    """The moment of a video whose keyframes (in time order) have these scores."""
    values = np.asarray(scores, dtype=np.float64)
    best = int(np.argmax(values))
    bar = values[best] - SPAN_SHARE * (values[best] - float(np.median(values)))
    first = last = best
    while first > 0 and values[first - 1] >= bar:
        first -= 1
    while last + 1 < len(values) and values[last + 1] >= bar:
        last += 1
    times = video.times
    end = times[last + 1] if last + 1 < len(times) else max(video.duration, times[last])
    return Moment(round(times[best], 3), (round(times[first], 3), round(end, 3)))


def find_moments(
    query: np.ndarray[Any, Any], videos: dict[int, VideoFrames], store: VectorTable
) -> dict[int, Moment]:
    """For each video (by item id): its moment for the query (a unit vector in the store's
    space). Keyframes whose vectors are unreadable are left out; a video with none left has
    no moment."""
    wanted = [key for video in videos.values() for key in video.keys]
    found, _, vectors = store.vectors_for(wanted)
    score_of = dict(zip(found, (vectors @ query).tolist(), strict=True)) if found else {}
    out: dict[int, Moment] = {}
    for item, video in videos.items():
        readable = [n for n, key in enumerate(video.keys) if key in score_of]
        if not readable:
            continue
        kept = VideoFrames(
            video.duration, [video.keys[n] for n in readable], [video.times[n] for n in readable]
        )
        out[item] = moment_of(kept, [score_of[key] for key in kept.keys])
    return out
