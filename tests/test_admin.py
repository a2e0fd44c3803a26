"""The admin through Django's test client: what operators see, what they may do, what it costs.

Actions run against the emulator over real HTTP, as the commands do; the large-data tests build
rows with ``bulk_create`` and assert a fixed query budget however many rows there are.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, cast

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.db import connection
from django.http import StreamingHttpResponse
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from raif_batches.exceptions import BatchInFlight, BatchStateError
from raif_batches.models import ModelCompletion, ModelCompletionBatch

from .helpers import make_batch, run_to_end, user

pytestmark = pytest.mark.django_db

BATCHES = reverse("admin:raif_batches_modelcompletionbatch_changelist")
COMPLETIONS = reverse("admin:raif_batches_modelcompletion_changelist")
XSS = '<script>window.__xss = 1; document.title = "pwned"</script><img src=x onerror="alert(1)">'


def batch_url(pk: int) -> str:
    return reverse("admin:raif_batches_modelcompletionbatch_change", args=[pk])


def run_url(pk: int, action: str) -> str:
    return reverse("admin:raif_batches_modelcompletionbatch_run", args=[pk, action])


def completion_url(pk: int) -> str:
    return reverse("admin:raif_batches_modelcompletion_change", args=[pk])


def streamed(response: Any) -> bytes:
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(cast(Iterable[bytes], response.streaming_content))


def texts(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def run_action(client: Client, action: str, *batches: ModelCompletionBatch) -> Any:
    return client.post(
        BATCHES,
        {"action": action, "_selected_action": [b.pk for b in batches], "index": 0},
        follow=True,
    )


def staff(*codenames: str) -> Client:
    """A logged-in staff user holding only the given raif_batches permissions."""
    account = User.objects.create_user("operator", password="pw", is_staff=True)
    account.user_permissions.set(
        Permission.objects.filter(content_type__app_label="raif_batches", codename__in=codenames)
    )
    client = Client()
    client.force_login(account)
    return client


def action_names(client: Client) -> set[str]:
    response = client.get(BATCHES)
    assert response.status_code == 200
    form = response.context["action_form"]  # None when no action is offered at all
    return {name for name, _ in form.fields["action"].choices if name} if form else set()


def bulk_batches(count: int) -> None:
    """``count`` batches in every status with realistic counts, inserted in a few queries."""
    statuses = [choice for choice, _ in ModelCompletionBatch.Status.choices]
    now = timezone.now()
    ModelCompletionBatch.objects.bulk_create(
        [
            ModelCompletionBatch(
                name=f"Nightly summaries {i}",
                model="grok-4.3" if i % 3 else "grok-4.20-0309",
                status=statuses[i % len(statuses)],
                provider_batch_id=f"batch_{i:06d}",
                request_counts={
                    "total": 1000,
                    "pending": 1000 - i % 1000,
                    "succeeded": (i % 1000) * 9 // 10,
                    "failed": (i % 1000) - (i % 1000) * 9 // 10,
                    "cancelled": 0,
                },
                total_cost=Decimal("0.0012345678") * i,
                created_at=now,
                submitted_at=now,
            )
            for i in range(count)
        ],
        batch_size=1000,
    )


def big_batch(count: int, failed: int) -> ModelCompletionBatch:
    """An ended batch with ``count`` completions, the first ``failed`` of them failed."""
    now = timezone.now()
    batch = ModelCompletionBatch.objects.create(
        name="Big one",
        model="grok-4.3",
        status="ended",
        provider_batch_id="batch_big",
        request_counts={
            "total": count,
            "pending": 0,
            "succeeded": count - failed,
            "failed": failed,
            "cancelled": 0,
        },
        submitted_at=now,
        started_at=now,
        ended_at=now,
        results_fetched_at=now,
        total_cost=Decimal("1.2345"),
    )
    ModelCompletion.objects.bulk_create(
        (
            ModelCompletion(
                batch=batch,
                batch_custom_id=f"row-{i:05d}",
                messages=user(f"Question {i}"),
                status="failed" if i < failed else "completed",
                raw_response="" if i < failed else f"Answer {i}",
                failure_error="invalid request" if i < failed else "",
                failure_reason=f"Line {i} was refused" if i < failed else "",
                prompt_tokens=10,
                completion_tokens=5,
                total_tokens=15,
                completed_at=None if i < failed else now,
            )
            for i in range(count)
        ),
        batch_size=5000,
    )
    return batch


# --- the batch list -------------------------------------------------------------------------


def test_batch_list_shows_badge_progress_costs_and_times(admin_client: Client, emulator: Any):
    batch = run_to_end(make_batch(3, failing=1, name="Weekly digest"))
    response = admin_client.get(BATCHES)
    html = response.content.decode()
    assert response.status_code == 200
    assert "Weekly digest" in html
    assert '<span class="raif-badge raif-status-ended">Ended</span>' in html
    assert 'class="raif-progress-succeeded" style="width: 75.00%"' in html
    assert 'class="raif-progress-failed" style="width: 25.00%"' in html
    assert "4 / 4" in html
    assert "3 succeeded, 1 failed, 0 cancelled, 0 pending of 4" in html
    assert batch.total_cost is not None
    exact = format(batch.total_cost.normalize(), "f")
    assert f'title="${exact}">${batch.total_cost:.6f}</span>' in html
    for column in ("column-created", "column-submitted", "column-ended"):
        assert column in html
    assert html.count('<time class="raif-time"') == 3


def test_batch_list_filters_and_search(admin_client: Client) -> None:
    bulk_batches(30)
    response = admin_client.get(BATCHES, {"status__exact": "failed"})
    assert {b.status for b in response.context["cl"].result_list} == {"failed"}
    response = admin_client.get(BATCHES, {"model": "grok-4.20-0309"})
    assert {b.model for b in response.context["cl"].result_list} == {"grok-4.20-0309"}
    response = admin_client.get(BATCHES, {"provider": "xai"})
    assert response.context["cl"].result_count == 30
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    response = admin_client.get(BATCHES, {"created_at__gte": str(today)})
    assert response.context["cl"].result_count == 30
    response = admin_client.get(BATCHES, {"q": "batch_000017"})
    assert [b.provider_batch_id for b in response.context["cl"].result_list] == ["batch_000017"]
    filters = response.content.decode()
    for title in ("By status", "By provider", "By model", "By created at"):
        assert title in filters
    # No "Show counts": it would count every batch once per filter choice.
    assert "_facets" not in filters


def test_batch_search_matches_what_an_index_serves(admin_client: Client) -> None:
    bulk_batches(30)
    ids = list(ModelCompletionBatch.objects.order_by("pk").values_list("pk", flat=True))

    def names(term: str) -> list[str]:
        response = admin_client.get(BATCHES, {"q": term})
        assert response.status_code == 200
        return sorted(b.name for b in response.context["cl"].result_list)

    # A name by its beginning, whatever the case; quotes are dropped.
    assert names('"nightly summaries 29"') == ["Nightly summaries 29"]
    assert names("NIGHTLY SUMMARIES 2") == sorted(
        ["Nightly summaries 2"] + [f"Nightly summaries {i}" for i in range(20, 30)]
    )
    # Not inside a name: a substring match would read every batch (documented in the help).
    assert names("summaries 29") == []
    # Ids whole: the batch's own (with or without #) and the provider's.
    assert names(f"#{ids[5]}") == names(str(ids[5])) == ["Nightly summaries 5"]
    assert names("batch_000007") == ["Nightly summaries 7"]
    assert names("batch_00000") == []
    response = admin_client.get(BATCHES)
    assert "beginning of a name" in response.context["cl"].search_help_text


def test_the_model_filter_offers_every_model_in_use_and_only_those(admin_client: Client) -> None:
    bulk_batches(30)  # grok-4.3 and grok-4.20-0309
    ModelCompletionBatch.objects.filter(
        pk=ModelCompletionBatch.objects.order_by("pk")[0].pk
    ).update(model="an-old-model")
    response = admin_client.get(BATCHES)
    spec = next(s for s in response.context["cl"].filter_specs if s.title == "model")
    assert [value for value, _ in spec.lookup_choices] == [
        "an-old-model",
        "grok-4.20-0309",
        "grok-4.3",
    ]
    # A model typed into the URL stays visible (and clearable), even with no batch.
    response = admin_client.get(BATCHES, {"model": "grok-9"})
    spec = next(s for s in response.context["cl"].filter_specs if s.title == "model")
    assert "grok-9" in [value for value, _ in spec.lookup_choices]
    assert list(response.context["cl"].result_list) == []


def test_batch_list_with_10000_batches_stays_within_10_queries(
    admin_client: Client, django_assert_max_num_queries: Any
) -> None:
    bulk_batches(10_000)
    admin_client.get(BATCHES)  # warm the session and content types
    with django_assert_max_num_queries(10):
        response = admin_client.get(BATCHES)
    assert response.status_code == 200
    assert response.context["cl"].result_count == 10_000
    assert len(response.context["cl"].result_list) == 100
    with django_assert_max_num_queries(10):
        filtered = admin_client.get(BATCHES, {"status__exact": "in_progress", "q": "Nightly"})
    assert filtered.status_code == 200


# --- the batch page -------------------------------------------------------------------------


def test_batch_page_shows_counts_failure_timeline_and_link(admin_client: Client, emulator: Any):
    batch = run_to_end(make_batch(2, failing=1, name="Digest"))
    original = make_batch(1)
    ModelCompletionBatch.objects.filter(pk=batch.pk).update(retry_of=original)
    response = admin_client.get(batch_url(batch.pk))
    html = response.content.decode()
    assert response.status_code == 200
    # Provider fields are shown, never as inputs.
    assert batch.provider_batch_id in html
    assert 'name="provider_batch_id"' not in html and 'name="status"' not in html
    assert 'name="name"' in html  # the operator's own label stays editable
    # Counts, each a link to the matching completions, and the link to all of them.
    assert f"{COMPLETIONS}?batch={batch.pk}&amp;status__exact=failed" in html
    assert f'href="{COMPLETIONS}?batch={batch.pk}"' in html
    # The failed preview shows the provider's reason.
    assert "Line 0 violates the usage policy" in html
    # Timeline in order of events.
    for label in ("Created", "Submitted", "Ended: ended", "Results fetched"):
        assert label in html
    assert html.index("<strong>Submitted</strong>") < html.index("<strong>Results fetched</strong>")
    assert f'href="{batch_url(original.pk)}">#{original.pk}</a>' in html
    # Buttons for the actions that apply now: retry and exports, not submit or cancel.
    actions = [a["name"] for a in response.context["raif_actions"]]
    assert actions == ["retry_action", "export_jsonl_action", "export_csv_action"]


def test_batch_page_with_50000_completions_stays_within_10_queries(
    admin_client: Client, django_assert_max_num_queries: Any
) -> None:
    batch = big_batch(50_000, failed=500)
    admin_client.get(batch_url(batch.pk))
    with django_assert_max_num_queries(10):
        response = admin_client.get(batch_url(batch.pk))
    html = response.content.decode()
    assert response.status_code == 200
    assert "50,000" in html
    # Only the first 20 failed completions are loaded, with a link to the rest.
    assert "row-00019" in html and "row-00020" not in html
    assert f"{COMPLETIONS}?batch={batch.pk}&amp;status__exact=failed" in html
    assert "750,000" in html  # token total, from one aggregate


def test_completion_list_of_a_50000_batch_stays_within_10_queries(
    admin_client: Client, django_assert_max_num_queries: Any
) -> None:
    batch = big_batch(50_000, failed=10)
    admin_client.get(COMPLETIONS, {"batch": batch.pk})
    with django_assert_max_num_queries(10):
        response = admin_client.get(
            COMPLETIONS, {"batch": str(batch.pk), "status__exact": "failed"}
        )
    assert response.context["cl"].result_count == 10
    with django_assert_max_num_queries(10):
        response = admin_client.get(COMPLETIONS, {"batch": batch.pk})
    assert response.status_code == 200
    assert response.context["cl"].result_count == 50_000
    assert len(response.context["cl"].result_list) == 100
    assert f"#{batch.pk} Big one" in response.content.decode()  # the batch filter's one choice
    response = admin_client.get(COMPLETIONS, {"batch": batch.pk, "q": "row-04242"})
    assert [c.batch_custom_id for c in response.context["cl"].result_list] == ["row-04242"]
    # Across every batch a search would read the whole table: the list asks for a batch.
    response = admin_client.get(COMPLETIONS, {"q": "row-04242"})
    assert list(response.context["cl"].result_list) == []
    assert any("Choose a batch first" in text for text in texts(response))


def test_the_completion_date_is_filtered_within_a_batch_only(admin_client: Client) -> None:
    batch = big_batch(30, failed=3)  # the failed ones have no completion time
    if connection.vendor == "postgresql":
        # The unfiltered count below is the planner's estimate once it exceeds the count
        # limit: statistics left by an earlier test's bigger tables must not decide it.
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {ModelCompletion._meta.db_table}")
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    day = {
        "completed_at__gte": str(today),
        "completed_at__lt": str(today + timezone.timedelta(days=1)),
    }
    # Across every batch the date filter is not offered: that column has no index.
    assert "By completed at" not in admin_client.get(COMPLETIONS).content.decode()
    response = admin_client.get(COMPLETIONS, {"batch": batch.pk})
    assert "By completed at" in response.content.decode()
    response = admin_client.get(COMPLETIONS, {"batch": batch.pk, **day})
    assert response.context["cl"].result_count == 27
    # A date in the URL without a batch is ignored, and the page says why.
    response = admin_client.get(COMPLETIONS, day)
    assert response.context["cl"].result_count == 30
    assert any("Choose a batch first" in text for text in texts(response))
    assert "_facets" not in response.content.decode()  # no "Show counts" either


@pytest.mark.parametrize("listing", ["batches", "completions"])
def test_list_rows_are_rendered_as_django_renders_them(
    admin_client: Client, emulator: Any, listing: str
) -> None:
    """The rows rendered once per page (admin/rows.py) are Django's own markup, byte for byte."""
    from django.contrib.admin.templatetags.admin_list import results

    from raif_batches.admin.rows import fast_results

    batch = run_to_end(make_batch(3, failing=1, name=f"Digest {XSS}"))
    make_batch(2)  # pending: no times, no costs
    url, query = (
        (BATCHES, {"status__exact": "ended", "q": "digest"})
        if listing == "batches"
        else (COMPLETIONS, {"batch": batch.pk})
    )
    for params in ({}, query):  # with filters, whose query string each link keeps
        response = admin_client.get(url, params)
        cl = response.context["cl"]
        ours = fast_results(cl)
        assert ours is not None
        django_rows = ["".join(row) for row in results(cl)]
        assert ["".join(row) for row in ours] == django_rows
        html = response.content.decode()
        assert all(row in html for row in django_rows)
        assert XSS not in html


def test_a_column_the_fast_rows_do_not_know_is_rendered_by_django(rf: Any) -> None:
    from django.contrib import admin

    from raif_batches.admin import ModelCompletionAdmin
    from raif_batches.admin.rows import fast_results, render_result_list

    class WithRelation(ModelCompletionAdmin):
        list_display = ("batch_custom_id", "batch", "status_badge")

    big_batch(3, failed=1)
    request = rf.get(COMPLETIONS)
    request.user = User.objects.create_superuser("root", "root@example.com", "pw")
    cl = WithRelation(ModelCompletion, admin.site).get_changelist_instance(request)
    cl.formset = None
    assert fast_results(cl) is None  # a relation: Django's display_for_field, not ours
    html = render_result_list(cl)
    assert html.count("<tr>") == 4 and "Big one" in html and "field-batch nowrap" in html


def test_delete_confirmation_summarises_instead_of_listing_completions(
    admin_client: Client, django_assert_max_num_queries: Any
) -> None:
    batch = big_batch(5000, failed=0)
    url = reverse("admin:raif_batches_modelcompletionbatch_delete", args=[batch.pk])
    with django_assert_max_num_queries(10):
        response = admin_client.get(url)
    html = response.content.decode()
    assert "5,000 completions" in html
    assert "row-00001" not in html
    admin_client.post(url, {"post": "yes"})
    assert not ModelCompletion.objects.filter(batch_id=batch.pk).exists()


# --- permissions ----------------------------------------------------------------------------


def test_actions_are_hidden_without_their_permissions() -> None:
    batch = make_batch(1)
    viewer = staff("view_modelcompletionbatch")
    assert action_names(viewer) == set()
    page = viewer.get(batch_url(batch.pk))
    assert page.status_code == 200
    assert page.context["raif_actions"] == []
    assert 'class="raif-actions"' not in page.content.decode()
    assert viewer.post(run_url(batch.pk, "submit_action")).status_code == 403
    assert viewer.post(run_url(batch.pk, "delete_selected")).status_code == 403
    # The changelist ignores an action it did not offer.
    run_action(viewer, "submit_action", batch)
    batch.refresh_from_db()
    assert batch.status == "pending"
    # With one permission, a forged request for another action is refused too.
    User.objects.filter(username="operator").delete()
    poller = staff("view_modelcompletionbatch", "poll_modelcompletionbatch")
    response = run_action(poller, "submit_action", batch)
    assert texts(response) == ["No action selected."]
    batch.refresh_from_db()
    assert batch.status == "pending"


def test_each_action_needs_its_own_permission() -> None:
    codenames = {
        "submit": "submit_action",
        "poll": "poll_action",
        "cancel": "cancel_action",
        "harvest": "harvest_action",
        "retry": "retry_action",
    }
    for index, (perm, action) in enumerate(codenames.items()):
        User.objects.filter(username="operator").delete()
        client = staff("view_modelcompletionbatch", f"{perm}_modelcompletionbatch")
        assert action_names(client) == {action}, index
    User.objects.filter(username="operator").delete()
    client = staff("view_modelcompletionbatch", "export_modelcompletionbatch")
    assert action_names(client) == {"export_jsonl_action", "export_csv_action"}
    User.objects.filter(username="operator").delete()
    client = staff("view_modelcompletionbatch", "delete_modelcompletionbatch")
    assert action_names(client) == {"delete_selected"}


def test_nothing_is_added_and_completions_are_view_only(admin_client: Client) -> None:
    batch = make_batch(1)
    completion = batch.completions.get()
    assert admin_client.get(BATCHES + "add/").status_code == 403
    assert admin_client.get(COMPLETIONS + "add/").status_code == 403
    page = admin_client.get(completion_url(completion.pk))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert admin_client.post(completion_url(completion.pk), {"status": "completed"}).status_code
    completion.refresh_from_db()
    assert completion.status == "pending"


# --- actions --------------------------------------------------------------------------------


def test_submit_action_reports_counts_and_skips_others(admin_client: Client, emulator: Any):
    first, second = make_batch(2), make_batch(1)
    done = run_to_end(make_batch(1))
    response = run_action(admin_client, "submit_action", first, second, done)
    assert response.status_code == 200
    messages = texts(response)
    assert "2 batches submitted." in messages
    assert "1 batch skipped: only pending batches are submitted." in messages
    assert emulator.state.count_calls("create_batch") == 3  # two now, one by run_to_end
    for batch in (first, second):
        batch.refresh_from_db()
        assert batch.status == "submitted"


def test_poll_action_refreshes_and_fetches_results(admin_client: Client, emulator: Any) -> None:
    batch = make_batch(3, failing=1)
    run_action(admin_client, "submit_action", batch)
    response = None
    for _ in range(5):
        response = run_action(admin_client, "poll_action", batch)
        batch.refresh_from_db()
        if batch.results_fetched_at:
            break
    assert batch.status == "ended" and batch.results_fetched_at is not None
    assert response is not None
    assert "Results fetched for 1 batch (4 results stored)." in texts(response)
    again = run_action(admin_client, "poll_action", batch)
    assert (
        "1 batch skipped: nothing to poll (not submitted yet, or finished with results fetched)."
        in texts(again)
    )


def test_cancel_from_the_batch_page(admin_client: Client, emulator: Any) -> None:
    emulator.config.requests_per_read = 1  # keep the batch in progress
    batch = make_batch(5)
    run_action(admin_client, "submit_action", batch)
    page = admin_client.get(batch_url(batch.pk))
    assert "cancel_action" in [a["name"] for a in page.context["raif_actions"]]
    response = admin_client.post(run_url(batch.pk, "cancel_action"), follow=True)
    assert response.redirect_chain[-1][0] == batch_url(batch.pk)
    assert (
        "Cancellation requested for 1 batch; results already produced will still be fetched."
        in texts(response)
    )
    assert emulator.state.count_calls("cancel_batch") == 1
    batch.refresh_from_db()
    assert batch.cancel_requested_at is not None and batch.cancel_reason == "admin"
    assert "Cancel requested (admin)" in response.content.decode()
    # Cancelling a pending batch needs no provider call; an ended one is skipped with a reason.
    pending = make_batch(1)
    ended = run_to_end(make_batch(1))
    response = run_action(admin_client, "cancel_action", pending, ended)
    messages = texts(response)
    assert any("Cancellation requested for 1 batch" in m for m in messages)
    assert f"Batch {ended.pk} is already ended." in messages
    pending.refresh_from_db()
    assert pending.status == "canceled"


def test_harvest_action(admin_client: Client, emulator: Any) -> None:
    batch = make_batch(2)
    run_action(admin_client, "submit_action", batch)
    batch.refresh_from_db()
    page = admin_client.get(batch_url(batch.pk))
    assert "harvest_action" not in [a["name"] for a in page.context["raif_actions"]]
    for _ in range(5):  # status reads only, as a poller would, without fetching results
        batch = batch.refresh_status()
        if batch.is_terminal:
            break
    assert batch.status == "ended" and batch.results_fetched_at is None
    page = admin_client.get(batch_url(batch.pk))
    assert "harvest_action" in [a["name"] for a in page.context["raif_actions"]]
    response = run_action(admin_client, "harvest_action", batch)
    assert "Results fetched for 1 batch (2 results stored)." in texts(response)
    assert batch.completions.filter(status="completed").count() == 2
    response = run_action(admin_client, "harvest_action", batch)
    assert "No results fetched." in texts(response)


def test_retry_action_creates_linked_batch(admin_client: Client, emulator: Any) -> None:
    batch = run_to_end(make_batch(2, failing=2))
    clean = run_to_end(make_batch(1))
    response = run_action(admin_client, "retry_action", batch, clean)
    retry = ModelCompletionBatch.objects.get(retry_of=batch)
    assert retry.status == "pending"
    assert sorted(retry.completions.values_list("batch_custom_id", flat=True)) == [
        "bad-000",
        "bad-001",
    ]
    messages = texts(response)
    assert any(
        f'1 retry batch created: <a href="{batch_url(retry.pk)}">#{retry.pk}</a> (2 requests)' in m
        for m in messages
    )
    assert "1 batch skipped: no failed completions to retry." in messages
    assert f'<a href="{batch_url(retry.pk)}">#{retry.pk}</a>' in response.content.decode()


def test_exports_stream_every_row(admin_client: Client, emulator: Any) -> None:
    batch = run_to_end(make_batch(2, failing=1))
    ModelCompletion.objects.filter(batch=batch, batch_custom_id="req-000").update(
        raw_response='=HYPERLINK("http://evil")'
    )
    response = admin_client.post(
        BATCHES, {"action": "export_jsonl_action", "_selected_action": [batch.pk]}
    )
    assert response.streaming
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert 'filename="raif-batch-' in response["Content-Disposition"]
    lines = [json.loads(line) for line in streamed(response).splitlines()]
    assert [row["custom_id"] for row in lines] == ["req-000", "req-001", "bad-000"]
    assert lines[1]["response"].startswith("Emulated answer to: Question number 1")
    assert lines[2]["status"] == "failed"
    assert lines[2]["failure_reason"] == "Line 0 violates the usage policy"
    assert Decimal(lines[1]["total_cost"]) > 0

    response = admin_client.post(run_url(batch.pk, "export_csv_action"))
    assert response.streaming and response["Content-Type"].startswith("text/csv")
    body = streamed(response).decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [row["custom_id"] for row in rows] == ["req-000", "req-001", "bad-000"]
    # A spreadsheet must not run model output as a formula.
    assert rows[0]["response"] == '\'=HYPERLINK("http://evil")'


def test_exports_need_the_export_permission(emulator: Any) -> None:
    batch = make_batch(1)
    client = staff("view_modelcompletionbatch", "poll_modelcompletionbatch")
    assert client.post(run_url(batch.pk, "export_jsonl_action")).status_code == 403
    response = client.post(
        BATCHES, {"action": "export_csv_action", "_selected_action": [batch.pk]}, follow=True
    )
    assert not getattr(response, "streaming", False)


# --- failures shown, never a 500, never the key ---------------------------------------------


def test_rejected_key_is_an_error_message_without_the_key(
    admin_client: Client, emulator: Any, settings: Any
) -> None:
    secret = "xai-THIS-KEY-MUST-NEVER-BE-SHOWN"
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "XAI_API_KEY": secret}
    batch = make_batch(1)
    response = run_action(admin_client, "submit_action", batch)
    assert response.status_code == 200
    errors = [str(m) for m in get_messages(response.wsgi_request) if m.level_tag == "error"]
    assert any("API key rejected" in e for e in errors), errors
    assert secret not in response.content.decode()
    assert all(secret not in m for m in texts(response))


def test_unreachable_provider_and_missing_key_are_error_messages(
    admin_client: Client, emulator: Any, settings: Any
) -> None:
    batch = make_batch(1)
    run_action(admin_client, "submit_action", batch)
    settings.RAIF_BATCHES = {
        **settings.RAIF_BATCHES,
        "XAI_BASE_URL": "http://127.0.0.1:9/v1",
        "RETRY": {"MAX_ATTEMPTS": 2, "BACKOFF_BASE": 0.01, "BACKOFF_MAX": 0.01},
    }
    response = admin_client.post(run_url(batch.pk, "cancel_action"), follow=True)
    assert response.status_code == 200
    errors = [str(m) for m in get_messages(response.wsgi_request) if m.level_tag == "error"]
    assert len(errors) == 1 and errors[0].startswith(f"batch {batch.pk}: "), errors

    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "XAI_API_KEY": ""}
    response = run_action(admin_client, "submit_action", make_batch(1))
    assert response.status_code == 200
    assert any("No xAI API key" in m for m in texts(response)), texts(response)


# --- model output is text -------------------------------------------------------------------


def test_model_output_and_names_are_escaped_everywhere(admin_client: Client, emulator: Any):
    batch = run_to_end(make_batch(1, failing=1, name=f"Evil {XSS}"))
    completion = batch.completions.get(status="completed")
    completion.raw_response = f"Here you go: {XSS}"
    completion.response_payload = {"choices": [{"message": {"content": XSS}}]}
    completion.response_json = {"html": XSS}
    completion.messages = user(XSS)
    completion.save()
    batch.completions.filter(status="failed").update(failure_reason=XSS, failure_error=XSS[:60])

    pages = {
        "batch list": admin_client.get(BATCHES),
        "batch page": admin_client.get(batch_url(batch.pk)),
        "completion list": admin_client.get(COMPLETIONS, {"batch": batch.pk}),
        "completion page": admin_client.get(completion_url(completion.pk)),
    }
    for where, response in pages.items():
        html = response.content.decode()
        assert response.status_code == 200, where
        assert "<script>window.__xss" not in html, where
        assert "<img src=x" not in html, where
        assert "&lt;script&gt;window.__xss = 1" in html, where
    page = pages["completion page"].content.decode()
    # Pretty-printed inside <pre>: the answer as text, the payloads as indented JSON.
    assert '<pre class="raif-pre raif-wrap">Here you go: &lt;script&gt;' in page
    assert "{\n  &quot;html&quot;: &quot;&lt;script&gt;" in page
    assert "&quot;role&quot;: &quot;user&quot;" in page


# --- deletion -------------------------------------------------------------------------------

IN_FLIGHT = (
    "the paid provider batch keeps running; cancel it first and delete it once it has settled"
)


def batch_in(status: str, *, fetched: bool = False, provider_id: str = "batch_x") -> Any:
    """A batch of 3 requests put straight into ``status`` (an update sends no signals)."""
    batch = make_batch(3)
    ModelCompletionBatch.objects.filter(pk=batch.pk).update(
        status=status,
        provider_batch_id=provider_id,
        results_fetched_at=timezone.now() if fetched else None,
    )
    batch.refresh_from_db()
    return batch


def delete_url(pk: int) -> str:
    return reverse("admin:raif_batches_modelcompletionbatch_delete", args=[pk])


@pytest.mark.parametrize("status", ["submitting", "submitted", "in_progress", "cancelling"])
def test_a_batch_at_the_provider_is_not_deleted_from_its_page(
    admin_client: Client, status: str
) -> None:
    batch = batch_in(status)
    page = admin_client.get(delete_url(batch.pk))
    html = page.content.decode()
    assert page.status_code == 200
    assert "This batch cannot be deleted" in html
    assert IN_FLIGHT in html
    assert 'name="post"' not in html  # no confirm button to press
    admin_client.post(delete_url(batch.pk), {"post": "yes"})
    assert ModelCompletionBatch.objects.filter(pk=batch.pk).exists()
    assert ModelCompletion.objects.filter(batch_id=batch.pk).count() == 3


def test_unfetched_paid_results_are_not_deleted(admin_client: Client) -> None:
    batch = batch_in("ended")
    html = admin_client.get(delete_url(batch.pk)).content.decode()
    assert "its results have not been fetched yet" in html
    admin_client.post(delete_url(batch.pk), {"post": "yes"})
    assert ModelCompletion.objects.filter(batch_id=batch.pk).count() == 3
    # A submission the provider refused has nothing to fetch: it may go.
    refused = batch_in("failed", provider_id="")
    assert refused.can_delete
    refused.delete()
    assert not ModelCompletion.objects.filter(batch_id=refused.pk).exists()


def test_delete_selected_refuses_the_whole_selection_with_each_reason(
    admin_client: Client,
) -> None:
    running = batch_in("in_progress")
    settled = batch_in("ended", fetched=True)
    page = run_action(admin_client, "delete_selected", running, settled)
    html = page.content.decode()
    assert "Nothing was deleted" in html and IN_FLIGHT in html
    assert f"#{running.pk} " in html and f"#{settled.pk} " not in html
    admin_client.post(
        BATCHES,
        {
            "action": "delete_selected",
            "_selected_action": [running.pk, settled.pk],
            "post": "yes",
        },
    )
    assert ModelCompletionBatch.objects.filter(pk__in=[running.pk, settled.pk]).count() == 2
    assert ModelCompletion.objects.filter(batch__in=[running, settled]).count() == 6


def test_delete_pages_count_the_completion_rows_not_the_provider_counters(
    admin_client: Client,
) -> None:
    # The provider has not counted anything yet; the three stored rows still go with the batch.
    batch = batch_in("pending", provider_id="")
    ModelCompletionBatch.objects.filter(pk=batch.pk).update(
        request_counts={"total": 0, "pending": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
    )
    html = admin_client.get(delete_url(batch.pk)).content.decode()
    assert "<li>Model completions: 3</li>" in html
    other = batch_in("canceled", fetched=True)
    html = run_action(admin_client, "delete_selected", batch, other).content.decode()
    assert "<li>Model completions: 6</li>" in html
    admin_client.post(
        BATCHES,
        {"action": "delete_selected", "_selected_action": [batch.pk, other.pk], "post": "yes"},
    )
    assert not ModelCompletionBatch.objects.filter(pk__in=[batch.pk, other.pk]).exists()
    assert not ModelCompletion.objects.filter(batch_id__in=[batch.pk, other.pk]).exists()


@pytest.mark.parametrize("status", ["submitting", "submitted", "in_progress", "cancelling"])
def test_the_orm_refuses_to_delete_a_batch_at_the_provider(status: str) -> None:
    batch = batch_in(status)
    assert not batch.can_delete
    with pytest.raises(BatchInFlight, match="cancel it first"):
        batch.delete()
    with pytest.raises(BatchInFlight, match=f"Batch {batch.pk} cannot be deleted"):
        ModelCompletionBatch.objects.filter(pk=batch.pk).delete()
    assert ModelCompletionBatch.objects.filter(pk=batch.pk).exists()
    assert ModelCompletion.objects.filter(batch_id=batch.pk).count() == 3
    assert isinstance(BatchInFlight("x"), BatchStateError)


def test_a_stale_instance_is_checked_against_the_row() -> None:
    batch = batch_in("pending", provider_id="")
    ModelCompletionBatch.objects.filter(pk=batch.pk).update(status="submitting")
    assert batch.can_delete  # what this stale copy believes
    with pytest.raises(BatchInFlight):
        batch.delete()
    assert ModelCompletion.objects.filter(batch_id=batch.pk).count() == 3


def test_deletable_is_the_same_rule_as_can_delete() -> None:
    batches = [
        batch_in(status, fetched=fetched, provider_id=provider_id)
        for status in [choice for choice, _ in ModelCompletionBatch.Status.choices]
        for fetched in (False, True)
        for provider_id in ("", "batch_x")
    ]
    deletable = set(ModelCompletionBatch.objects.deletable().values_list("pk", flat=True))
    assert deletable == {b.pk for b in batches if b.can_delete}
    assert {b.status for b in batches if b.pk in deletable} == {
        "pending",
        "ended",
        "canceled",
        "expired",
        "failed",
    }
    # Settled batches go with their completions, whatever the path.
    ModelCompletionBatch.objects.deletable().delete()
    assert not ModelCompletion.objects.filter(batch_id__in=deletable).exists()
    assert ModelCompletionBatch.objects.count() == len(batches) - len(deletable)


# --- Django versions ------------------------------------------------------------------------


def test_the_batch_page_and_its_buttons_warn_of_nothing_deprecated(
    admin_client: Client, emulator: Any
) -> None:
    """Django 6.1 deprecates indexing and unpacking the entries of ``get_actions()``."""
    import warnings

    batch = make_batch(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        page = admin_client.get(batch_url(batch.pk))
        admin_client.post(run_url(batch.pk, "submit_action"))
        admin_client.get(BATCHES)
    assert [a["name"] for a in page.context["raif_actions"]][:1] == ["submit_action"]
    assert ModelCompletionBatch.objects.get(pk=batch.pk).status == "submitted"
    deprecated = [
        str(w.message)
        for w in caught
        if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))
    ]
    assert deprecated == []


def test_action_entries_are_read_by_attribute_where_django_has_them() -> None:
    from raif_batches.admin.object_actions import action_parts

    class Action:  # the shape of Django 6.1's entries; indexing them warns
        func = staticmethod(len)
        name = "length"
        description = "Length"

        def __getitem__(self, index: int) -> Any:
            raise AssertionError("indexed")

        def __iter__(self) -> Any:
            raise AssertionError("unpacked")

    assert action_parts(Action()) == (len, "Length")
    assert action_parts((len, "length", "Length")) == (len, "Length")  # Django 5.2 and 6.0


def _held_for_the_operator(emulator: Any) -> tuple[ModelCompletionBatch, str]:
    """A batch whose create happened but whose answer was lost, with two candidates shown (as
    a provider without names leaves it): the real one and a stranger's."""
    from raif_batches.emulator import Fault
    from raif_batches.polling import submit

    batch = make_batch(2)
    emulator.add_fault(Fault("create_batch", "accept_then_drop"))
    submit([batch.pk])
    real = next(iter(emulator.state.batches))
    ModelCompletionBatch.objects.filter(pk=batch.pk).update(
        reconcile_candidates=[
            {"provider_batch_id": real, "created_at": None, "requests": 2},
            {"provider_batch_id": "batch_someone_elses", "created_at": None, "requests": 2},
        ],
        failure_error="lost create ambiguous",
    )
    return ModelCompletionBatch.objects.get(pk=batch.pk), real


def test_an_ambiguous_lost_create_is_adopted_from_the_batch_page(
    admin_client: Client, emulator: Any
) -> None:
    batch, real = _held_for_the_operator(emulator)
    page = admin_client.get(batch_url(batch.pk)).content.decode()
    assert "Lost create: which provider batch is this one?" in page
    assert f"Adopt {real}" in page and "Adopt batch_someone_elses" in page
    adopt = reverse("admin:raif_batches_modelcompletionbatch_adopt", args=[batch.pk, real])
    assert admin_client.get(adopt).status_code == 405
    response = admin_client.post(adopt)
    assert response.status_code == 302
    assert any(
        f"Adopted provider batch {real}" in m.message for m in get_messages(response.wsgi_request)
    )
    batch.refresh_from_db()
    assert (batch.provider_batch_id, batch.reconcile_candidates) == (real, [])
    batch = run_to_end(batch)
    assert batch.completions.filter(status="completed").count() == 2
    assert emulator.state.count_calls("create_batch") == 1


def test_an_ambiguous_lost_create_is_abandoned_and_never_created_again(
    admin_client: Client, emulator: Any
) -> None:
    from raif_batches.polling import submit

    batch, _ = _held_for_the_operator(emulator)
    viewer = staff("view_modelcompletionbatch")
    abandon = reverse("admin:raif_batches_modelcompletionbatch_abandon", args=[batch.pk])
    assert viewer.post(abandon).status_code == 403
    assert "Abandon this batch" not in viewer.get(batch_url(batch.pk)).content.decode()
    assert admin_client.post(abandon).status_code == 302
    batch.refresh_from_db()
    assert (batch.status, batch.failure_error) == ("failed", "abandoned by operator")
    assert "batch_someone_elses" in batch.failure_reason
    assert set(batch.completions.values_list("status", flat=True)) == {"failed"}
    submit()
    assert emulator.state.count_calls("create_batch") == 1
