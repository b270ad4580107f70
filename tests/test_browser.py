"""The web page in a real browser: headless Chromium (Debian's) driven by Playwright against
`clipsearch serve` on loopback with a small real index. Screenshots land in
test-artifacts/browser/ (kept by CI as an artifact path).

Without Chromium or Playwright the test skips, except under CI (CI=true), where it fails:
`.ci/run` installs both."""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.serving import Collection, build_collection, start_server, stop_server

CHROMIUM = os.environ.get("CLIPSEARCH_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "browser"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _unavailable() -> str | None:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python playwright is not installed"
    return None


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, Collection]]:
    missing = _unavailable()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test cannot run in CI: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    collection = build_collection(tmp_path_factory.mktemp("browsed"))
    process, base = start_server(collection)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            browser, page = launch(p)
            errors: list[str] = []
            requested: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda r: requested.append(r.url))
            missing: list[str] = []
            page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
            # The random model's scores mean nothing: no relevance bar, and its ranking alone.
            page.goto(f"{base}/?min_relevance=off&mode=semantic")
            yield page, base, collection
            assert not errors, f"JavaScript errors on the page: {errors}"
            elsewhere = [u for u in requested if not u.startswith((base, "blob:", "data:"))]
            assert len(requested) > 20 and not elsewhere, f"fetched from elsewhere: {elsewhere}"
            assert not missing, f"404s: {missing}"  # the favicon among them, once
            browser.close()
    finally:
        stop_server(process)


def launch(playwright: Any) -> tuple[Any, Any]:
    """Headless Chromium (Debian's) and a page of desktop size in it."""
    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    browser = playwright.chromium.launch(executable_path=executable, headless=True, args=FLAGS)
    return browser, browser.new_page(viewport={"width": 1200, "height": 900})


def _hit_paths(page: Any) -> list[str]:
    return [str(p) for p in page.locator("[data-testid=hit]").evaluate_all(
        "items => items.map(li => li.title)")]  # fmt: skip


def _search(page: Any, text: str) -> None:
    page.get_by_test_id("query").fill(text)
    page.get_by_test_id("query").press("Enter")
    page.get_by_test_id("message").filter(has_text=" result").wait_for()


def test_search_click_more_like_this_example_and_filters(
    browser_page: tuple[Any, str, Collection],
) -> None:
    page, _base, collection = browser_page
    page.get_by_test_id("status").filter(has_text="18 images").wait_for()
    for hidden in ("example", "filters", "more", "detail"):
        assert page.get_by_test_id(hidden).is_hidden(), hidden

    # Type a query, see results with thumbnails and scores.
    _search(page, "a red square")
    hits = page.locator("[data-testid=hit]")
    assert hits.count() == 18
    first_img = hits.first.locator("img")
    first_img.wait_for()
    # Thumbnails load, except the one for the symlink that leads outside (403): a placeholder.
    page.wait_for_function(
        """(link) => [...document.querySelectorAll('[data-testid=hit]')].slice(0, 8).every(
            li => li.title === link ? li.classList.contains('broken')
                                    : li.querySelector('img').naturalWidth > 0)""",
        arg=str(collection.escaping_link),
    )
    assert page.get_by_test_id("more").is_hidden()  # all 18 fit on the first page
    scores = [float(s.removeprefix("cos ")) for s in hits.locator(".score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    page.screenshot(path=str(ARTIFACTS / "results.png"), full_page=True)

    # Click one: a larger view with its metadata.
    first_path = _hit_paths(page)[0]
    hits.first.click()
    detail = page.get_by_test_id("detail")
    detail.wait_for(state="visible")
    assert first_path in page.get_by_test_id("detail-meta").inner_text()
    page.wait_for_function("() => document.getElementById('detail-image').naturalWidth > 0")
    page.screenshot(path=str(ARTIFACTS / "detail.png"))

    # "More like this": the clicked photo's neighbours, without itself.
    page.get_by_test_id("more-like-this").click()
    page.get_by_test_id("message").filter(has_text=" result").wait_for()
    assert detail.is_hidden()
    assert first_path not in _hit_paths(page) and len(_hit_paths(page)) == 17

    # Search by example (the file picker): the photo itself comes first.
    example = collection.folder_b / "img_0102.jpg"
    page.get_by_test_id("query").fill("")
    page.get_by_test_id("image-input").set_input_files(str(example))
    page.get_by_test_id("message").filter(has_text=" result").wait_for()
    assert page.get_by_test_id("example").is_visible()
    assert _hit_paths(page)[0] == str(example)

    # Drag and drop an image onto the page: same search.
    dropped = collection.folder_a / "img_0004.jpg"
    data = base64.b64encode(dropped.read_bytes()).decode()
    page.evaluate(
        """(data) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "dropped.jpg", {type: "image/jpeg"}));
            window.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer}));
        }""",
        data,
    )
    page.wait_for_function(
        "(path) => document.querySelector('[data-testid=hit]')?.title === path", arg=str(dropped)
    )
    page.click("#clear-example")

    # Filters act: only photos in folder b.
    _search(page, "a photo")
    page.click("#toggle-filters")
    page.get_by_test_id("filter-folder").fill(str(collection.folder_b))
    page.get_by_test_id("filters").get_by_role("button", name="Apply").click()
    page.wait_for_function("() => document.querySelectorAll('[data-testid=hit]').length === 6")
    assert all(p.startswith(str(collection.folder_b)) for p in _hit_paths(page))
    page.get_by_test_id("filter-tags").fill("harbour")
    page.get_by_test_id("filters").get_by_role("button", name="Apply").click()
    page.wait_for_function("() => document.querySelectorAll('[data-testid=hit]').length === 1")
    assert _hit_paths(page) == [str(collection.tagged)]
    page.screenshot(path=str(ARTIFACTS / "filtered.png"), full_page=True)


def test_results_page_in_as_the_grid_scrolls(browser_page: tuple[Any, str, Collection]) -> None:
    page, base, _collection = browser_page
    page.set_viewport_size({"width": 420, "height": 500})  # two columns: a phone's width
    page.goto(f"{base}/?k=4&q=a+boat&min_relevance=off&mode=semantic")
    page.get_by_test_id("message").filter(has_text="4 results").wait_for()
    for _ in range(10):  # each scroll to the end loads the next page, up to all 18
        page.mouse.wheel(0, 5000)
        page.wait_for_timeout(300)
        if page.locator("[data-testid=hit]").count() == 18:
            break
    assert page.locator("[data-testid=hit]").count() == 18
    assert len(set(_hit_paths(page))) == 18  # no page twice
    page.get_by_test_id("message").filter(has_text="18 results").wait_for()
    assert page.get_by_test_id("more").is_hidden()
    columns = page.evaluate(
        "getComputedStyle(document.getElementById('results')).gridTemplateColumns.split(' ').length"
    )
    assert columns == 2
    page.screenshot(path=str(ARTIFACTS / "narrow.png"), full_page=True)
    page.set_viewport_size({"width": 1200, "height": 900})


def test_indexing_from_the_page_updates_the_status_line(
    browser_page: tuple[Any, str, Collection],
) -> None:
    page, _base, collection = browser_page
    page.get_by_test_id("index-path").fill(str(collection.new_folder))
    page.get_by_test_id("index-start").click()
    page.get_by_test_id("status").filter(has_text="30 images").wait_for(timeout=120_000)
    page.screenshot(path=str(ARTIFACTS / "indexed.png"))


def test_form_apply_clear_and_a_long_path_at_phone_width(
    browser_page: tuple[Any, str, Collection],
) -> None:
    page, base, collection = browser_page
    page.goto(f"{base}/?min_relevance=off&mode=semantic")
    _search(page, "a photo")
    # "Apply" runs what the box says now, not the search before it.
    page.get_by_test_id("query").fill("a red square")
    page.click("#toggle-filters")
    page.get_by_test_id("filter-folder").fill(str(collection.folder_a))
    page.get_by_test_id("filters").get_by_role("button", name="Apply").click()
    page.wait_for_function("() => new URL(location.href).searchParams.get('q') === 'a red square'")
    page.get_by_test_id("message").filter(has_text=" result").wait_for()
    assert all(p.startswith(str(collection.folder_a)) for p in _hit_paths(page))
    page.get_by_test_id("filters").get_by_role("button", name="Clear").click()

    # Clearing the example image with an empty box clears the results.
    page.get_by_test_id("query").fill("")
    page.get_by_test_id("image-input").set_input_files(str(collection.folder_b / "img_0102.jpg"))
    page.get_by_test_id("message").filter(has_text=" result").wait_for()
    page.click("#clear-example")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=hit]').length === 0")

    # The detail view at a phone's width: the long path wraps inside the dialog.
    page.set_viewport_size({"width": 360, "height": 700})
    _search(page, "a boat")
    page.locator("[data-testid=hit]").first.click()
    page.get_by_test_id("detail").wait_for(state="visible")
    overflow = page.evaluate(
        "(() => { const d = document.getElementById('detail');"
        " return d.scrollWidth - d.clientWidth; })()"
    )
    assert overflow <= 1, f"the dialog overflows by {overflow} px"
    page.screenshot(path=str(ARTIFACTS / "detail-narrow.png"))
    page.keyboard.press("Escape")
    page.set_viewport_size({"width": 1200, "height": 900})


def test_no_good_match_and_the_weaker_matches_link(
    browser_page: tuple[Any, str, Collection],
) -> None:
    """The page's default relevance bar is `auto`: words the model does not know find
    nothing, said plainly, and one click shows the weaker hits, with their relevance."""
    page, base, _ = browser_page
    page.goto(base)
    page.get_by_test_id("query").fill("zxqvj wplkq")
    page.get_by_test_id("query").press("Enter")
    message = page.get_by_test_id("message")
    message.filter(has_text="No good match").wait_for()
    assert page.locator("[data-testid=hit]").count() == 0
    page.screenshot(path=str(ARTIFACTS / "no-good-match.png"))
    link = page.get_by_test_id("show-weaker")
    assert "weaker match" in link.inner_text()
    link.click()
    page.wait_for_function("() => document.querySelectorAll('[data-testid=hit]').length > 0")
    scores = page.locator("[data-testid=hit] .score").all_inner_texts()
    assert scores and all(s.endswith("%") and not s.startswith("-") for s in scores), scores
    assert page.get_by_test_id("show-weaker").count() == 0
    page.screenshot(path=str(ARTIFACTS / "weaker-matches.png"))


def test_the_page_finds_a_photo_by_its_caption_words(
    browser_page: tuple[Any, str, Collection],
) -> None:
    """By default the page searches words and meaning (hybrid) with the relevance bar on:
    the photo whose caption holds the words comes first, with a relevance, not a cosine."""
    page, base, collection = browser_page
    page.goto(base)
    _search(page, "dogs playing in snow")
    assert _hit_paths(page)[0] == str(collection.folder_b / "img_0101.jpg")
    first = page.locator("[data-testid=hit] .score").first.inner_text()
    assert first.endswith("%") and int(first[:-1]) >= 75, first
    page.get_by_test_id("sort").select_option("date")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=hit]').length > 0")
    page.screenshot(path=str(ARTIFACTS / "hybrid.png"))
    # "Words only": just the photo whose words hold the query's.
    page.get_by_test_id("mode").select_option("keyword")
    page.get_by_test_id("message").filter(has_text="1 result").wait_for()
    assert _hit_paths(page) == [str(collection.folder_b / "img_0101.jpg")]
    page.get_by_test_id("mode").select_option("hybrid")
