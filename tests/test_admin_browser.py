"""The admin in a real browser: Debian's Chromium driven by Playwright against a live server.

What only a browser can prove: the login form works, the pages render with their styles, an
action button changes what the operator sees, and a ``<script>`` inside a model's answer is
shown as text and never runs, and both lists fit a 1440 px screen with the sidebar open, in the
light and the dark theme. With ``RAIF_SCREENSHOTS=1`` the run also rewrites the screenshots under
``docs/`` (off by default, so CI runs leave the tree clean).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connections

from raif_batches import retry_failed
from raif_batches.models import ModelCompletion, ModelCompletionBatch
from raif_batches.polling import poll, submit

from .helpers import make_batch, run_to_end

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS = Path(__file__).resolve().parent.parent / "docs"
#: A common laptop screen; the admin's navigation sidebar is open at this width.
WIDTH = 1440
#: The wait for the last page's requests at the end of a test (a step waits 15 s at most).
IDLE_TIMEOUT_MS = 60_000
PASSWORD = "correct horse battery staple"
XSS_ANSWER = (
    'Sure! <script>window.__xss = 1; document.title = "pwned"</script>'
    '<img src="x" onerror="window.__xss = 2">'
)

# Playwright's sync API runs an event loop in this thread; Django refuses ORM calls from a
# thread with a running loop unless told that this is deliberate.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's Chromium is not installed at /usr/bin/chromium (apt-get install chromium)",
    ),
]


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
            # On PostgreSQL a connection of this thread was otherwise still open when the test
            # database was dropped ("is being accessed by other users"); close it first.
            connections.close_all()


@pytest.fixture
def page(browser: Any, live_server: Any) -> Iterator[Any]:
    context = browser.new_context(
        viewport={"width": WIDTH, "height": 900}, base_url=str(live_server)
    )
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    try:
        yield tab
        # Let the last page's requests finish, so no server thread still holds a database
        # connection when the test database is dropped. Given longer than a step: on a loaded
        # machine the live server's last answers have taken over 15 s.
        tab.wait_for_load_state("networkidle", timeout=IDLE_TIMEOUT_MS)
    finally:
        context.close()


def screenshot(page: Any, name: str) -> None:
    if os.environ.get("RAIF_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS / name), full_page=True)


def log_in(page: Any) -> None:
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    page.goto("/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")


def realistic_batches(emulator: Any) -> dict[str, ModelCompletionBatch]:
    """A small site's worth of batches, driven through the emulator over real HTTP."""
    triage = run_to_end(make_batch(46, failing=3, name="Ticket triage, week 47"))
    answer = triage.completions.get(batch_custom_id="req-007")
    answer.raw_response = XSS_ANSWER
    answer.save(update_fields=["raw_response"])
    run_to_end(make_batch(12, name="Release notes, French"))
    retry_failed(triage)
    make_batch(30, name="Support reply drafts")
    cancelled = make_batch(25, name="Churn interviews summary")
    cancelled.cancel(reason="admin")
    # The in-progress batch finishes one line per status read, so a poll visibly moves it.
    emulator.config.requests_per_read = 4
    running = make_batch(40, name="Product descriptions, spring catalogue")
    run_to_end_steps(running, polls=2)
    running.refresh_from_db()
    return {"triage": triage, "running": running}


def run_to_end_steps(batch: ModelCompletionBatch, polls: int) -> None:
    assert submit([batch.pk]).ok
    for _ in range(polls):
        poll([batch.pk], force=True)


def test_operator_logs_in_watches_polls_and_cancels(page: Any, emulator: Any) -> None:
    batches = realistic_batches(emulator)
    running = batches["running"]
    log_in(page)

    page.click("text=Model completion batches")
    page.wait_for_selector("#result_list")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 6
    assert page.locator(".raif-badge.raif-status-ended").count() == 2
    assert page.locator(".raif-badge.raif-status-in-progress").count() == 1
    assert page.locator(".raif-progress-succeeded").count() >= 3
    assert page.locator("#changelist-filter").is_visible()
    screenshot(page, "admin-batch-list.png")

    # Search by provider batch id finds exactly that batch.
    page.fill("#searchbar", running.provider_batch_id)
    with page.expect_navigation():
        page.press("#searchbar", "Enter")
    assert page.locator("#result_list tbody tr").count() == 1
    page.click(f"#result_list a:has-text('#{running.pk} ')")

    label = page.locator(".raif-progress-wide .raif-progress-label")
    before = label.inner_text()
    page.click("button[data-action=poll_action]")
    page.wait_for_selector(".messagelist")
    assert "1 batch refreshed from the provider." in page.locator(".messagelist").inner_text()
    after = page.locator(".raif-progress-wide .raif-progress-label").inner_text()
    assert _done(after) > _done(before), (before, after)

    page.click("button[data-action=cancel_action]")
    page.wait_for_selector(".messagelist")
    assert "Cancellation requested for 1 batch" in page.locator(".messagelist").inner_text()
    assert "Cancel requested (admin)" in page.locator(".raif-timeline").inner_text()
    assert emulator.state.count_calls("cancel_batch") == 1
    # A cancelled batch offers no second cancel.
    assert page.locator("button[data-action=cancel_action]").count() == 0


def test_batch_page_and_script_in_an_answer_never_runs(page: Any, emulator: Any) -> None:
    batches = realistic_batches(emulator)
    triage = batches["triage"]
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    log_in(page)

    page.goto(f"/admin/raif_batches/modelcompletionbatch/{triage.pk}/change/")
    page.wait_for_selector(".raif-timeline")
    assert page.locator(".raif-badge").first.inner_text().lower() == "ended"
    assert "Results fetched" in page.locator(".raif-timeline").inner_text()
    failed_rows = page.locator("table.raif-failed tbody tr")
    assert failed_rows.count() == 3
    screenshot(page, "admin-batch-page.png")

    # The counts link to the filtered completion list; open the one with the script in it.
    page.click("a.raif-completions-link")
    page.wait_for_selector("#result_list")
    assert page.locator("#result_list tbody tr").count() == 49
    answer = ModelCompletion.objects.get(batch=triage, batch_custom_id="req-007")
    page.fill("#searchbar", "req-007")
    with page.expect_navigation():
        page.press("#searchbar", "Enter")
    assert "Sure! <script>" in page.locator("#result_list tbody tr").first.inner_text()
    page.click("#result_list a:has-text('req-007')")
    page.wait_for_selector("pre.raif-wrap")

    assert page.evaluate("() => window.__xss") is None
    assert page.title() != "pwned"
    assert dialogs == []
    shown = page.locator("pre.raif-wrap").first.inner_text()
    assert shown == answer.raw_response == XSS_ANSWER
    # Messages (request) are pretty-printed JSON, shown as text too.
    assert '"role": "user"' in page.locator("pre.raif-pre").first.inner_text()
    assert page.locator("#content-main img[src='x']").count() == 0


def _done(label: str) -> int:
    return int(label.split("/")[0].replace(",", "").strip())


def right_edge(page: Any, selector: str) -> float:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not rendered"
    return float(box["x"] + box["width"])


def fits_without_scrolling(page: Any) -> None:
    """The result table is wholly inside its box: Django clips it and scrolls sideways."""
    box = page.locator("#changelist .results")
    assert box.evaluate("(el) => el.scrollWidth <= el.clientWidth"), box.evaluate(
        "(el) => [el.scrollWidth, el.clientWidth]"
    )


def test_both_lists_fit_1440_pixels_with_the_sidebar_open(page: Any, emulator: Any) -> None:
    batches = realistic_batches(emulator)
    triage = batches["triage"]
    log_in(page)

    page.goto("/admin/raif_batches/modelcompletionbatch/")
    page.wait_for_selector("#result_list")
    assert page.locator("#nav-sidebar").is_visible()
    assert page.locator("#changelist-filter").is_visible()
    visible = right_edge(page, "#changelist .results")
    for column in ("created", "submitted", "ended"):
        assert right_edge(page, f"#result_list th.column-{column}") <= visible, column
    fits_without_scrolling(page)
    screenshot(page, "admin-batch-list.png")

    # The batch page's link opens the completions of that batch, with the batch filter shown.
    page.goto(f"/admin/raif_batches/modelcompletionbatch/{triage.pk}/change/")
    page.click("a.raif-completions-link")
    page.wait_for_selector("#result_list")
    selected = page.locator("#changelist-filter li.selected", has_text=f"#{triage.pk} ")
    assert selected.count() == 1
    visible = right_edge(page, "#changelist .results")
    assert right_edge(page, "#result_list th.column-answer_preview") <= visible
    fits_without_scrolling(page)
    answer = ModelCompletion.objects.get(batch=triage, batch_custom_id="req-007")
    clipped = page.locator("#result_list tr:has-text('req-007') .field-answer_preview .raif-clip")
    assert clipped.get_attribute("title") == " ".join(answer.raw_response.split())
    screenshot(page, "admin-completion-list.png")

    # Any batch can be chosen by its id from the sidebar, without a list of batches.
    page.goto("/admin/raif_batches/modelcompletion/")
    page.fill("#raif-batch-id", str(triage.pk))
    with page.expect_navigation():
        page.press("#raif-batch-id", "Enter")
    assert page.locator("#result_list tbody tr").count() == 49


def track_colour(page: Any) -> str:
    return str(
        page.evaluate(
            "() => getComputedStyle(document.querySelector('.raif-progress')).backgroundColor"
        )
    )


def test_the_empty_progress_track_shows_in_the_dark_themes(
    browser: Any, live_server: Any, emulator: Any
) -> None:
    make_batch(5, name="Waiting to be submitted")
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    for scheme, theme in (("dark", None), ("light", "dark")):
        context = browser.new_context(
            viewport={"width": WIDTH, "height": 900},
            base_url=str(live_server),
            color_scheme=scheme,
        )
        tab = context.new_page()
        try:
            log_in_as_existing(tab)
            if theme:  # Django's theme toggle keeps the choice in localStorage
                tab.evaluate(f"() => localStorage.setItem('theme', '{theme}')")
            tab.goto("/admin/raif_batches/modelcompletionbatch/")
            tab.wait_for_selector(".raif-progress")
            assert track_colour(tab) == "rgb(75, 85, 99)", (scheme, theme)
            if scheme == "dark":
                screenshot(tab, "admin-batch-list-dark.png")
            tab.wait_for_load_state("networkidle", timeout=IDLE_TIMEOUT_MS)
        finally:
            context.close()


def log_in_as_existing(page: Any) -> None:
    page.goto("/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
