"""Fail fast, with a useful message, when published weights are neither cached nor reachable.

Without this, an offline machine sits through huggingface_hub's retries (about a minute of
warnings) before open_clip gives up. The probe runs only when the weights are not in the
local cache, and is skipped behind a proxy, where a direct connection says nothing.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def is_cached(hf_hub: str) -> bool:
    """Whether open_clip's `hf_hub` entry ('org/repo/' or 'org/repo/file') is in the cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    filenames: tuple[str, ...]
    if hf_hub.endswith("/"):
        repo_id, filenames = hf_hub.rstrip("/"), _WEIGHT_FILES
    else:
        repo_id, filename = hf_hub.rsplit("/", 1)
        filenames = (filename,)
    return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in filenames)


def unreachable_reason(timeout: float = 3.0) -> str | None:
    """None when the hub answers (or may, through a proxy); otherwise why not, in words."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(name) for name in _PROXY_VARS):
        return None
    url = urlparse(hub_endpoint())
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return f"cannot reach {host}:{port} ({exc.strerror or exc})"
    return None
