"""Videos: keyframes chosen by scene change (`scenes`, `decode`, `keyframes`), and the few
frames that stand for a video (`select`)."""

from __future__ import annotations


def clock(seconds: float) -> str:
    """A time in a video as HH:MM:SS (whole seconds, rounded down)."""
    whole = max(0, int(seconds))
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"
