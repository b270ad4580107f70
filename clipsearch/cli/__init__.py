"""The `clipsearch` command: parses, calls the library, prints. Nothing else lives here.

Results go to stdout (`--json` for machines); progress and errors go to stderr. Heavy imports
(torch, open_clip) happen inside the library only when a command needs the model. One module
per group of commands; each registers itself on the shared `app` when imported.
"""

from __future__ import annotations

import sys

import typer

# Importing a command module registers its commands, in this order in --help.
from clipsearch.cli import images  # noqa: F401

# isort: split
from clipsearch.cli import search  # noqa: F401

# isort: split
from clipsearch.cli import texts  # noqa: F401

# isort: split
from clipsearch.cli import videos  # noqa: F401

# isort: split
from clipsearch.cli import adapters  # noqa: F401

# isort: split
from clipsearch.cli import evaluate  # noqa: F401

# isort: split
from clipsearch.cli import serve  # noqa: F401

# isort: split
from clipsearch.cli import maintenance  # noqa: F401
from clipsearch.cli.common import app
from clipsearch.cli.plain_help import set_metavars

set_metavars(app)

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted; committed batches are kept, re-run to continue", err=True)
        sys.exit(130)
