"""Fixtures that run a test on both stores: an SQLite folder and a real PostgreSQL database.

The PostgreSQL cases need a server: `CLIPSEARCH_TEST_POSTGRES` (a URL of a database whose
user may create databases), by default the local server over its Unix socket as the current
user. Each test gets a database of its own, dropped afterwards. Where no server answers, the
PostgreSQL cases skip with the reason; `.ci/run` installs and starts one, so CI runs them.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

ADMIN_URL = os.environ.get(
    "CLIPSEARCH_TEST_POSTGRES", "postgresql+psycopg://@/postgres?host=/var/run/postgresql"
)
BACKENDS = ["sqlite", "postgresql"]


class PostgresServer:
    """Makes and drops throwaway databases on a PostgreSQL server."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._admin: Engine | None = None
        self._unreachable: str | None = None

    def admin(self) -> Engine:
        if self._unreachable is not None:
            pytest.skip(self._unreachable)
        if self._admin is None:
            try:
                import psycopg  # noqa: F401
            except ImportError:
                self._unreachable = "psycopg is not installed (pip install 'clipsearch[postgres]')"
                pytest.skip(self._unreachable)
            engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            try:
                with engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1")
            except Exception as exc:
                engine.dispose()
                first = str(exc).strip().splitlines()[0]
                self._unreachable = (
                    f"no PostgreSQL server at {self.admin_url} ({first}); install and start "
                    "one (Debian: apt install postgresql; pg_ctlcluster 15 main start) or set "
                    "CLIPSEARCH_TEST_POSTGRES"
                )
                pytest.skip(self._unreachable)
            self._admin = engine
        return self._admin

    def create(self) -> str:
        """A new, empty database; returns its URL."""
        name = f"clipsearch_test_{uuid.uuid4().hex[:12]}"
        with self.admin().connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        with contextlib.suppress(Exception), self.admin().connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(ADMIN_URL)
    yield server
    if server._admin is not None:
        server._admin.dispose()


@contextlib.contextmanager
def _stores(backend: str, folder: Path, server: PostgresServer) -> Iterator[Callable[..., str]]:
    made: list[str] = []

    def make(name: str = "db") -> str:
        if backend == "sqlite":
            return str(folder / name)
        made.append(server.create())
        return made[-1]

    if backend == "postgresql":
        server.admin()  # skip now, with the reason, if there is no server
    try:
        yield make
    finally:
        for url in made:
            server.drop(url)


@pytest.fixture(params=BACKENDS)
def store(
    request: pytest.FixtureRequest, tmp_path: Path, postgres: PostgresServer
) -> Iterator[Callable[..., str]]:
    """`store(name)`: a new, empty index location on the backend of this run of the test:
    a folder under tmp_path, or a fresh PostgreSQL database URL."""
    with _stores(request.param, tmp_path, postgres) as make:
        yield make


@pytest.fixture(scope="module", params=BACKENDS)
def module_store(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresServer,
) -> Iterator[Callable[..., str]]:
    """`store`, for module-scoped fixtures."""
    with _stores(request.param, tmp_path_factory.mktemp("stores"), postgres) as make:
        yield make
