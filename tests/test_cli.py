"""The CLI, through typer's CliRunner and as a real subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import clipsearch
from clipsearch.cli import app
from tests.conftest import REPO, run_cli_checking_imports, write_images

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

runner = CliRunner()


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_index_search_stats_with_json(tmp_path: Path) -> None:
    photos = write_images(tmp_path / "photos", 6)
    (tmp_path / "photos" / "bad.jpg").write_bytes(b"")
    db = str(tmp_path / "db")

    code, out, _ = _run(
        "index",
        str(tmp_path / "photos"),
        "--db",
        db,
        "--model",
        "tiny-random",
        "--json",
        "--quiet",
        "--workers",
        "0",
    )
    assert code == 0
    summary = json.loads(out)
    assert {k: summary[k] for k in ("added", "updated", "removed", "moved")} == {
        "added": 6,
        "updated": 0,
        "removed": 0,
        "moved": 0,
    }
    assert summary["skipped"] == [
        {"path": str(tmp_path / "photos" / "bad.jpg"), "reason": "empty file (0 bytes)"}
    ]

    code, out, _ = _run("search", "a red square", "--db", db, "-k", "3", "--json")
    assert code == 0
    hits = json.loads(out)
    assert len(hits) == 3 and set(hits[0]) == {"path", "score", "id"}
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]

    code, out, _ = _run("search", "--image", str(photos[2]), "--db", db, "--json", "-k", "1")
    assert code == 0 and json.loads(out)[0]["path"] == str(photos[2])

    code, out, _ = _run("search", "a red square", "--db", db, "-k", "2")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == ["rank", "score", "id", "path"] and len(lines) == 3

    code, out, _ = _run("stats", "--db", db, "--json")
    facts = json.loads(out)
    assert (facts["count"], facts["model"], facts["dim"], facts["index_type"]) == (
        6,
        "tiny-random",
        64,
        "flat-ip",
    )
    assert facts["database_bytes"] > 0


def test_plain_index_output_lists_skips_on_stderr(tmp_path: Path) -> None:
    write_images(tmp_path / "photos", 2)
    (tmp_path / "photos" / "bad.png").write_text("nope")
    code, out, err = _run(
        "index",
        str(tmp_path / "photos"),
        "--db",
        str(tmp_path / "db"),
        "--model",
        "tiny-random",
        "-q",
        "--workers",
        "0",
    )
    assert code == 0
    assert "added 2" in out and "skipped 1" in out
    assert re.search(r"skipping .*bad\.png: not an image", err)


def test_errors_are_one_line_with_exit_code_1(tmp_path: Path) -> None:
    code, out, err = _run("search", "x", "--db", str(tmp_path / "none"))
    assert code == 1 and out == "" and err.startswith("error: no clipsearch index")
    code, _, err = _run(
        "index", str(tmp_path / "missing"), "--db", str(tmp_path / "db"), "--model", "tiny-random"
    )
    assert code == 1 and "no such file or folder" in err
    code, _, err = _run("search", "--db", str(tmp_path / "db"))
    assert code == 2 and "give a text query" in err
    code, _, err = _run("index", str(tmp_path), "--db", str(tmp_path / "db"), "--workers", "-1")
    assert code == 1 and "invalid workers" in err


def test_settings_come_from_env_and_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_images(tmp_path / "photos", 2)
    config = tmp_path / "config.toml"
    config.write_text(f'db = "{tmp_path / "from-file"}"\nmodel = "tiny-random"\nworkers = 0\n')
    monkeypatch.setenv("CLIPSEARCH_CONFIG", str(config))
    assert _run("index", str(tmp_path / "photos"), "-q")[0] == 0
    assert (tmp_path / "from-file" / "clipsearch.db").exists()

    monkeypatch.setenv("CLIPSEARCH_DB", str(tmp_path / "from-env"))
    assert _run("index", str(tmp_path / "photos"), "-q")[0] == 0
    assert (tmp_path / "from-env" / "clipsearch.db").exists()

    assert (
        _run("index", str(tmp_path / "photos"), "-q", "--db", str(tmp_path / "from-flag"))[0] == 0
    )
    assert (tmp_path / "from-flag" / "clipsearch.db").exists()

    config.write_text("colour = 'blue'\n")
    code, _, err = _run("stats")
    assert code == 1 and "unknown keys ['colour']" in err


def test_every_command_is_documented_in_a_hand_written_page() -> None:
    """README.md or a topic page of docs/ (not the generated references, which list
    every command by construction)."""
    pages = [REPO / "README.md", *(REPO / "docs").glob("*.md")]
    readme = "\n".join(p.read_text() for p in pages if p.name not in ("cli.md", "http.md"))

    def names(typer_app: Any, prefix: str) -> list[str]:
        found = [
            prefix + (c.name or (c.callback.__name__ if c.callback else ""))
            for c in typer_app.registered_commands
        ]
        for group in typer_app.registered_groups:
            found += names(group.typer_instance, f"{prefix}{group.name} ")
        return found

    commands = names(app, "")
    assert "eval captions" in commands and "index" in commands
    for name in commands:
        assert f"clipsearch {name}" in readme, f"`clipsearch {name}` is in no hand-written page"


def test_help_and_stats_do_not_import_torch(tmp_path: Path) -> None:
    for argv in (["--help"], ["stats", "--db", str(tmp_path)], ["search", "--help"]):
        result = run_cli_checking_imports(argv)
        assert result.returncode == 0, f"{argv}: {result.stderr}"


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_prints_the_packages_version(flag: str) -> None:
    result = run_cli_checking_imports([flag])
    assert result.returncode == 0, result.stderr
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert result.stdout == f"clipsearch {declared}\n" == f"clipsearch {clipsearch.__version__}\n"


def test_short_help_works_for_the_app_and_its_commands() -> None:
    for argv, expected in ((["-h"], "Commands"), (["search", "-h"], "--image"),
                           (["texts", "add", "-h"], "Usage: clipsearch texts add")):  # fmt: skip
        result = run_cli_checking_imports(argv)
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout


def test_console_script_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clipsearch.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "search" in result.stdout
