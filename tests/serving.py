"""A small real collection to serve in tests: two folders of generated photos, an EXIF-rotated
one, an XMP sidecar with keywords, captions, and a symlink that leads outside the folders."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import clipsearch
from clipsearch.server import ServerSettings
from clipsearch.server.service import SearchService
from tests.conftest import make_image, write_images

XMP = """<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF
  xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
  xmlns:dc="http://purl.org/dc/elements/1.1/"><rdf:Description>
 <dc:subject><rdf:Bag><rdf:li>harbour</rdf:li></rdf:Bag></dc:subject>
</rdf:Description></rdf:RDF></x:xmpmeta>"""


@dataclass(frozen=True)
class Collection:
    root: Path
    db: str  # the index folder, or a PostgreSQL URL
    folder_a: Path
    folder_b: Path
    rotated: Path  # stored 200x100 with EXIF orientation 6: shown 100x200
    tagged: Path  # carries the keyword "harbour" through its XMP sidecar
    escaping_link: Path  # a symlink inside folder_a to a photo outside every folder
    new_folder: Path  # photos not yet indexed, for indexing jobs

    def settings(self, **changes: Any) -> ServerSettings:
        return replace(ServerSettings(db=self.db, workers=0), **changes)


def build_collection(root: Path, db: str | None = None) -> Collection:
    """The collection under `root`, indexed into `db` (default: the folder root/index)."""
    folder_a, folder_b = root / "photos" / "a", root / "photos" / "b"
    write_images(folder_a, 10)
    write_images(folder_b, 6, start=100)
    rotated = folder_a / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    make_image(7, (200, 100)).save(rotated, exif=exif, quality=92)
    tagged = folder_b / "img_0100.jpg"
    (folder_b / "img_0100.jpg.xmp").write_text(XMP)
    outside = root / "outside"
    outside.mkdir()
    make_image(999).save(outside / "secret.jpg")
    escaping_link = folder_a / "link.jpg"
    escaping_link.symlink_to(outside / "secret.jpg")
    captions = root / "captions.csv"
    captions.write_text(
        "image,caption\n"
        f"{folder_a / 'img_0000.jpg'},a red square on grass\n"
        f"{folder_b / 'img_0101.jpg'},two dogs playing in the snow\n"
    )
    new_folder = root / "incoming"
    write_images(new_folder, 12, start=300, size=(320, 240))
    db = db or str(root / "index")
    with clipsearch.open(db, model="tiny-random", workers=0) as index:
        index.add([root / "photos"])
        index.texts.add(captions)
    return Collection(root, db, folder_a, folder_b, rotated, tagged, escaping_link, new_folder)


def make_service(collection: Collection, **changes: Any) -> SearchService:
    return SearchService(collection.settings(**changes))


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Collection:
    """A fresh collection for each test module that asks (modules may change theirs)."""
    return build_collection(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def service(collection: Collection) -> Iterator[SearchService]:
    """The module's collection behind a `SearchService` (model loaded once)."""
    service = make_service(collection)
    yield service
    service.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def start_server(collection: Collection, *extra: str) -> tuple[subprocess.Popen[str], str]:
    return serve(str(collection.db), collection.root, *extra)


def serve(db: str, log_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """`clipsearch serve` on a free loopback port, once it answers (its log in `log_dir`)."""
    port = free_port()
    argv = [sys.executable, "-m", "clipsearch.cli", "serve", "--db", db,
            "--port", str(port), "--log-level", "warning", *extra]  # fmt: skip
    log = log_dir / f"server-{port}.log"
    with log.open("w") as out:  # a file, not a pipe nobody drains
        process = subprocess.Popen(argv, env=environment(), stdout=out, stderr=out, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()}")
        try:
            if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("server did not come up in 90 s")


def stop_server(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


class LocalClient(TestClient):
    """A test client whose requests say `Host: 127.0.0.1`, as a browser's on this machine
    do (a server without an API key refuses other names)."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        kwargs.setdefault("base_url", "http://127.0.0.1")
        super().__init__(app, **kwargs)
