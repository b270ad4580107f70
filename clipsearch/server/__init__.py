"""The HTTP API and the web page: a thin face of `clipsearch.Index`, like the CLI.

`create_app(settings)` builds the FastAPI app; `clipsearch serve` runs it under uvicorn.
"""

from clipsearch.server.app import create_app
from clipsearch.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
