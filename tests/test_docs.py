"""The docs stay true: the README's Python example runs as written (offline, on photos made
here), every link between the pages lands on a file and a heading that exist, and the
generated references match the code (`scripts/docs.py --check`, also run by
`scripts/check`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import make_image, write_images

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def test_the_readme_python_example_runs(tmp_path: Path) -> None:
    from clipsearch.models.runtime.export import models_cache

    write_images(tmp_path / "Pictures", 12)
    make_image(5).save(tmp_path / "Pictures" / "beach.jpg")
    (example,) = _python_blocks(ROOT / "README.md")
    script = tmp_path / "example.py"
    script.write_text(example)
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300,
        env={"HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
             "CLIPSEARCH_MODEL_CACHE": str(models_cache())},  # the model's export, made once
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 6 and lines[-1] == "13 photos and videos indexed"
    assert all(str(tmp_path / "Pictures") in line for line in lines[:5])


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_every_link_between_the_pages_lands() -> None:
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+://", target):
                continue
            file, _, anchor = target.partition("#")
            where = (page.parent / file).resolve() if file else page
            if not where.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and where.suffix == ".md" and anchor not in _anchors(where):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken


def test_the_readme_is_short_and_the_docs_are_many() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
    assert len(list((ROOT / "docs").glob("*.md"))) >= 5


def test_the_generated_references_match_the_code() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "docs.py"), "--check"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
