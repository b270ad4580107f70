"""The CLI's manners: plain help (value names, not type tags; no marks left where rich ate
a bracket), a readable `serve --help`, `--version`, near-miss model names caught before any
work, and `ask` on a loose picture without an index."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

import clipsearch
from clipsearch.cli import app
from clipsearch.errors import ModelSpecError
from clipsearch.models import parse_model_spec

runner = CliRunner()
#: typer's type tags (`<str>`, `<path>`, `<list[Path]>`, `<int range>`), not placeholders
#: such as ROOT/<class>/ that a help text writes itself.
TYPE_TAG = re.compile(r"<(str|int|float|bool|path|file|datetime|list\[.*?\]|\w+ range)>")


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command under a (typer's own click) group, with its path of names."""
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))


def _help(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_help_names_values_plainly_and_shows_every_option() -> None:
    root = typer.main.get_command(app)
    seen = 0
    for path, command in _commands(root):
        text = _help(*path)
        assert not TYPE_TAG.search(text), (path, TYPE_TAG.findall(text))
        assert not re.search(r" \.(\s|$)", text), path  # what rich left of "[default: …]."
        for param in command.params:
            if param.param_type_name == "option" and not param.hidden:
                assert any(opt in text for opt in param.opts), (path, param.opts)
        seen += 1
    assert seen >= 25  # every command and sub-command was looked at
    search = _help("search")
    assert "--image PATH" in search and "-k, --top INTEGER" in search and "QUERY" in search
    assert "[env CLIPSEARCH_DB; default ~/.local/share/clipsearch]" in " ".join(search.split())


def test_the_command_list_shows_whole_summaries() -> None:
    text = _help().split("Commands:")[1]
    assert "..." not in text and "…" not in text
    assert "ids kept, verified by row counts and a checksum of every vector" in " ".join(
        text.split()
    )


def test_serve_help_gives_its_descriptions_room() -> None:
    text = _help("serve")
    assert max(len(line) for line in text.splitlines()) <= 100
    line = next(line for line in text.splitlines() if "--max-inflight" in line)
    assert "Searches answered at once; more are refused" in line  # not a 20-column strip


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"clipsearch {clipsearch.__version__}"


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("clipsearch-mni", "clipsearch-mini"), ("ViT-B-23", "ViT-B-32"), ("vit-b-32", "ViT-B-32"),
     ("tiny-randm", "tiny-random"), ("ViT-B-23:laion2b_s34b_b79k", "ViT-B-32")],
)  # fmt: skip
def test_a_misspelled_model_gets_did_you_mean_before_any_work(
    tmp_path: Path, typed: str, meant: str
) -> None:
    with pytest.raises(ModelSpecError, match=f"did you mean .*'{re.escape(meant)}'"):
        parse_model_spec(typed)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    db = tmp_path / "db"
    result = runner.invoke(
        app, ["index", str(tmp_path / "a.jpg"), "--db", str(db), "--model", typed]
    )
    assert result.exit_code == 1 and f"'{meant}'" in result.stderr
    assert not db.exists()  # refused before the index (or a model export) was made
    for known in ("tiny-random", "clipsearch-mini", "ViT-B-32", "ViT-B-32:openai", "hf-hub:x/y"):
        parse_model_spec(known)


def test_ask_about_a_loose_picture_needs_no_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    picture = tmp_path / "red.jpg"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(picture)
    nowhere = tmp_path / "no-index"
    monkeypatch.setenv("CLIPSEARCH_DB", str(nowhere))
    asked = ["ask", str(picture), "what colour is it?", "--answers", "red,green"]
    result = runner.invoke(app, [*asked, "--model", "tiny-random"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() in {"red", "green"}
    assert not nowhere.exists()
    result = runner.invoke(app, asked)  # no model named: which one is not guessed
    assert result.exit_code == 1 and "--model SPEC" in result.stderr
    result = runner.invoke(app, ["ask", "7", "what colour?", "--model", "tiny-random"])
    assert result.exit_code == 1 and "no clipsearch index at" in result.stderr  # an id needs one


def test_an_architecture_added_to_open_clip_at_run_time_is_known(tmp_path: Path) -> None:
    import json

    import open_clip

    from clipsearch.models.spec import CONFIG_DIR

    config = json.loads((CONFIG_DIR / "clipsearch-tiny.json").read_text())
    (tmp_path / "MyTiny-7.json").write_text(json.dumps(config))
    with pytest.raises(ModelSpecError, match="unknown model 'MyTiny-7'"):
        parse_model_spec("MyTiny-7")
    open_clip.add_model_config(tmp_path)
    assert parse_model_spec("MyTiny-7").arch == "MyTiny-7"
