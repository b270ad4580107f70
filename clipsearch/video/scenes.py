"""Where a video's scenes change, from tiny thumbnails of its frames (pure numpy).

Each analysed frame is reduced to a signature (a 32x18 colour thumbnail, values 0-1); its
distance to another is the mean absolute difference. A frame is a *candidate keyframe* when

- it is the first frame;
- the picture has moved `cut` away from the last keyframe (a cut, or the sum of a pan, a
  zoom or a cross-fade) and has then settled (moved less than `still` over the last
  `window_s`: a slow fade moves little from one frame to the next, not over half a second),
  or `settle_s` has passed since it moved (a picture that never settles);
- or `max_spacing_s` has passed since the last keyframe (long static or slowly drifting
  shots still get one now and then);

and never closer than `min_spacing_s` to the last one. Comparing with the last keyframe,
not the previous frame, is what catches gradual transitions: each step of a fade is small,
their sum is not. Waiting for the picture to settle takes the new scene's frame instead of
the middle of a cross-fade.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The signature's size: enough to tell two pictures apart, too small to see grain.
SIGNATURE_SIZE = (32, 18)


@dataclass(frozen=True)
class SceneRules:
    cut: float = 0.1  # signature distance from the last keyframe that counts as a new scene
    still: float = 0.02  # distance between analysed frames below which a picture has settled
    settle_s: float = 1.0  # take the frame anyway this long after the picture moved
    window_s: float = 0.5  # how far back "settled" looks
    min_spacing_s: float = 1.0
    max_spacing_s: float = 30.0


def distance(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    return float(np.abs(a - b).mean())


class SceneCutter:
    """Feed it analysed frames in time order (`take`); it says which are keyframes."""

    def __init__(self, rules: SceneRules | None = None) -> None:
        self.rules = rules or SceneRules()
        self._key: np.ndarray[Any, Any] | None = None
        self._key_time = 0.0
        self._recent: deque[tuple[float, np.ndarray[Any, Any]]] = deque()
        self._moved_at: float | None = None
        #: The last keyframe's distance from the one before it (1.0 for the first).
        self.change = 1.0

    def take(self, time: float, signature: np.ndarray[Any, Any]) -> bool:
        """Whether the frame at `time` (seconds) with this signature is a keyframe."""
        rules = self.rules
        while self._recent and time - self._recent[0][0] > rules.window_s:
            self._recent.popleft()
        earlier = self._recent[0][1] if self._recent else None
        self._recent.append((time, signature))
        if self._key is None:
            return self._keep(time, signature)
        since = time - self._key_time
        if self._moved_at is None and distance(signature, self._key) > rules.cut:
            self._moved_at = time
        if since < rules.min_spacing_s:
            return False
        if self._moved_at is not None:
            settled = earlier is not None and distance(signature, earlier) < rules.still
            if settled or time - self._moved_at >= rules.settle_s:
                return self._keep(time, signature)
        if since >= rules.max_spacing_s:
            return self._keep(time, signature)
        return False

    def _keep(self, time: float, signature: np.ndarray[Any, Any]) -> bool:
        self.change = 1.0 if self._key is None else distance(signature, self._key)
        self._key, self._key_time, self._moved_at = signature, time, None
        return True
