"""Without Ray installed, the cluster options fail with the install hint, and nothing else
needs Ray."""

from __future__ import annotations

import sys

import pytest

from clipsearch.cluster.connect import require_ray
from clipsearch.errors import ClusterError


def test_missing_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ClusterError, match=r"pip install 'clipsearch\[cluster\]'"):
        require_ray()


def test_the_package_imports_without_touching_ray() -> None:
    import subprocess

    code = "import sys, clipsearch, clipsearch.cluster, clipsearch.cli; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
