"""Bulk writes on every database: exact values, idempotent filters, statements bounded by bytes
(PostgreSQL streams rows by COPY instead, unbounded by design), values kept out of the query
log."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from raif_batches.bulk import StatementDuringCopy, encode_json, insert_rows, update_from_values
from raif_batches.models import CompletionStatus, ModelCompletion

from .helpers import make_batch, user

pytestmark = pytest.mark.django_db

SET_FIELDS = (
    "status",
    "raw_response",
    "response_payload",
    "response_json",
    "prompt_tokens",
    "total_cost",
    "completed_at",
)


POSTGRESQL = connection.vendor == "postgresql"


def statements(context: CaptureQueriesContext, verb: str) -> int:
    """Statements whose main verb is ``verb``, after a leading ``WITH …`` clause if any."""
    return sum(1 for query in context.captured_queries if _verb(query["sql"]) == verb)


def _verb(sql: str) -> str:
    sql = sql.lstrip()
    if sql.startswith("WITH "):
        sql = sql[sql.index(") ", sql.index(" AS (")) + 2 :]
    return sql.split(None, 1)[0]


def result_row(pk: int, text: str, when: datetime.datetime) -> dict[str, Any]:
    return {
        "id": pk,
        "status": CompletionStatus.COMPLETED,
        "raw_response": text,
        "response_payload": {"nested": {"list": [1, 2.5, None, "é🙂"]}, "quote": "a'b\"c\\d"},
        "response_json": None,
        "prompt_tokens": 2_000_000_000,
        "total_cost": Decimal("0.0000000001"),
        "completed_at": when,
    }


def test_update_stores_every_value_exactly_and_respects_the_filter() -> None:
    batch = make_batch(3)
    first, second, third = batch.completions.order_by("pk")
    ModelCompletion.objects.filter(pk=third.pk).update(status=CompletionStatus.FAILED)
    when = timezone.now().replace(microsecond=123456)
    texts = {
        first.pk: "plain",
        second.pk: "line\nbreak, 'quotes' \"and\" \\ 🙂 中文",
        third.pk: "x",
    }
    changed = update_from_values(
        ModelCompletion,
        key_fields=("id",),
        set_fields=SET_FIELDS,
        rows=[result_row(pk, text, when) for pk, text in texts.items()],
        where="t.status = %s",
        where_params=[CompletionStatus.PENDING],
    )
    assert changed == 2
    for pk in (first.pk, second.pk):
        stored = ModelCompletion.objects.get(pk=pk)
        assert stored.status == CompletionStatus.COMPLETED
        assert stored.raw_response == texts[pk]
        assert stored.response_payload == result_row(pk, "", when)["response_payload"]
        assert stored.response_json is None
        assert stored.prompt_tokens == 2_000_000_000
        assert stored.total_cost == Decimal("0.0000000001")
        assert stored.completed_at == when
    untouched = ModelCompletion.objects.get(pk=third.pk)
    assert untouched.status == CompletionStatus.FAILED and untouched.raw_response == ""


def test_a_page_bigger_than_the_byte_bound_is_split_and_fully_stored(settings: Any) -> None:
    batch = make_batch(12)
    pks = list(batch.completions.order_by("pk").values_list("pk", flat=True))
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "MAX_STATEMENT_BYTES": 100_000}
    answer = "ü" * 20_000  # 40,000 bytes in UTF-8: two rows fit a statement, three do not
    when = timezone.now()
    with CaptureQueriesContext(connection) as context:
        changed = update_from_values(
            ModelCompletion,
            key_fields=("id",),
            set_fields=SET_FIELDS,
            rows=[result_row(pk, answer + str(pk), when) for pk in pks],
        )
    assert changed == 12
    if POSTGRESQL:
        # Streamed by one COPY into a temporary table, then one UPDATE: no statement holds
        # the page, so the byte bound has nothing to bound.
        assert (statements(context, "COPY"), statements(context, "UPDATE")) == (1, 1)
    else:
        assert statements(context, "UPDATE") == 6
    for pk in pks:
        assert ModelCompletion.objects.get(pk=pk).raw_response == answer + str(pk)


def test_a_row_bigger_than_the_bound_goes_alone(settings: Any) -> None:
    batch = make_batch(3)
    pks = list(batch.completions.order_by("pk").values_list("pk", flat=True))
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "MAX_STATEMENT_BYTES": 1_000}
    when = timezone.now()
    with CaptureQueriesContext(connection) as context:
        changed = update_from_values(
            ModelCompletion,
            key_fields=("id",),
            set_fields=SET_FIELDS,
            rows=[result_row(pk, "x" * 5_000, when) for pk in pks],
        )
    assert changed == 3
    assert statements(context, "UPDATE") == (1 if POSTGRESQL else 3)
    assert set(ModelCompletion.objects.values_list("raw_response", flat=True)) == {"x" * 5_000}


INSERTED = ("batch_custom_id", "messages", "temperature", "extra_body")


def inserted_row(custom_id: str, content: str, **extra: Any) -> tuple[Any, ...]:
    return (custom_id, encode_json(user(content)), 0.25, encode_json(extra))


def test_inserts_are_split_by_bytes_and_keep_every_value(settings: Any) -> None:
    batch = make_batch(1)
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "MAX_STATEMENT_BYTES": 50_000}
    content = "q" * 20_000  # about 20 KB a row: two fit a statement, three do not
    rows = [
        inserted_row(f"big-{i}", content + str(i), seed=i, nested={"none": None}) for i in range(6)
    ]
    now = timezone.now()
    with CaptureQueriesContext(connection) as context:
        assert (
            insert_rows(
                ModelCompletion,
                INSERTED,
                [rows],
                shared={"batch_id": batch.pk, "created_at": now},
            )
            == 6
        )
    if POSTGRESQL:
        assert (statements(context, "COPY"), statements(context, "INSERT")) == (1, 0)
    else:
        assert statements(context, "INSERT") == 3
    for i in range(6):
        stored = ModelCompletion.objects.get(batch=batch, batch_custom_id=f"big-{i}")
        assert stored.messages == user(content + str(i))
        assert stored.temperature == 0.25
        assert stored.extra_body == {"seed": i, "nested": {"none": None}}
        assert stored.status == CompletionStatus.PENDING
        assert (stored.created_at, stored.tools, stored.raw_response) == (now, None, "")


def test_inserted_json_text_is_stored_as_django_stores_it() -> None:
    """PostgreSQL parses the text into jsonb; SQLite and MariaDB keep Django's own text, every
    non-ASCII character escaped, whatever text the caller encoded."""
    batch = make_batch(1)
    texts = ["plain", "été 🙂", "del \x7f", 'quote " and \\ and \n']
    rows = [inserted_row(f"j-{i}", text, emoji="🙂") for i, text in enumerate(texts)]
    shared = {"batch_id": batch.pk, "created_at": timezone.now()}
    assert insert_rows(ModelCompletion, INSERTED, [rows[:2], rows[2:]], shared=shared) == 4
    for i, text in enumerate(texts):
        stored = ModelCompletion.objects.get(batch=batch, batch_custom_id=f"j-{i}")
        assert (stored.messages, stored.extra_body) == (user(text), {"emoji": "🙂"})
    if connection.vendor == "sqlite" or getattr(connection, "mysql_is_mariadb", False):
        # (MySQL 8 answers with its own rendering of a binary JSON column.)
        table = ModelCompletion._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT messages FROM {table} WHERE batch_id = %s AND batch_custom_id LIKE %s "
                "ORDER BY batch_custom_id",
                [batch.pk, "j-%"],
            )
            assert [row[0] for row in cursor.fetchall()] == [
                ModelCompletion._meta.get_field("messages").get_db_prep_save(user(text), connection)
                for text in texts
            ]


def test_insert_rows_refuses_to_leave_a_default_made_per_row_to_chance() -> None:
    batch = make_batch(1)
    with pytest.raises(ValueError, match="created_at"):
        insert_rows(ModelCompletion, INSERTED, [[]], shared={"batch_id": batch.pk})


@pytest.mark.skipif(not POSTGRESQL, reason="only a COPY holds the connection")
def test_a_statement_sent_while_rows_are_copied_fails_instead_of_waiting_forever() -> None:
    from django.db import transaction

    batch = make_batch(1)

    def rows() -> Any:
        yield inserted_row("ok", "fine")
        ModelCompletion.objects.count()  # the connection is busy with the COPY
        yield inserted_row("late", "never")

    shared = {"batch_id": batch.pk, "created_at": timezone.now()}
    with pytest.raises(StatementDuringCopy), transaction.atomic():
        insert_rows(ModelCompletion, INSERTED, [rows()], shared=shared)
    assert list(batch.completions.values_list("batch_custom_id", flat=True)) == ["req-000"]


def test_custom_ids_that_differ_only_by_case_are_distinct() -> None:
    """MySQL/MariaDB compare text without case by default; the provider does not."""
    from raif_batches import create_batch

    batch = create_batch(
        provider="xai",
        model="grok-4.3",
        requests=[
            {"custom_id": "ticket-a", "messages": user("lower")},
            {"custom_id": "ticket-A", "messages": user("upper")},
        ],
    )
    lower = ModelCompletion.objects.get(batch=batch, batch_custom_id="ticket-a")
    assert lower.messages == user("lower")
    assert batch.completions.filter(batch_custom_id__in=["ticket-A"]).count() == 1


def test_bulk_statements_are_counted_but_their_values_stay_out_of_the_query_log() -> None:
    """With DEBUG=True Django keeps every statement with its values interpolated; a harvest of
    big answers would keep them all. Only the SQL text is logged, once per statement sent, and
    execute_wrapper hooks see the same statements."""
    batch = make_batch(4)
    pks = list(batch.completions.order_by("pk").values_list("pk", flat=True))
    answer = "big answer " * 20_000  # 220 KB a row
    seen: list[str] = []

    def spy(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    with CaptureQueriesContext(connection) as context, connection.execute_wrapper(spy):
        changed = update_from_values(
            ModelCompletion,
            key_fields=("id",),
            set_fields=SET_FIELDS,
            rows=[result_row(pk, answer, timezone.now()) for pk in pks],
            where="t.status = %s",
            where_params=[CompletionStatus.PENDING],
        )
        inserted = insert_rows(
            ModelCompletion,
            INSERTED,
            [[inserted_row(f"new-{i}", answer) for i in range(3)]],
            shared={"batch_id": batch.pk, "created_at": timezone.now()},
        )
    assert (changed, inserted) == (4, 3)
    logged = [query["sql"] for query in context.captured_queries]
    assert logged == seen
    assert statements(context, "UPDATE") >= 1
    assert statements(context, "COPY" if POSTGRESQL else "INSERT") >= 1
    assert sum(len(sql) for sql in logged) < 50_000  # the values were 1.5 MB
    assert "big answer" not in " ".join(logged)
    assert ModelCompletion.objects.filter(raw_response=answer).count() == 4


def test_a_refused_row_aborts_only_its_statement_and_the_error_is_djangos() -> None:
    """A value the column refuses fails the statement with Django's DatabaseError (which the
    harvest catches to store the page row by row), and the transaction goes on."""
    from django.db import DatabaseError, transaction

    batch = make_batch(2)
    first, second = batch.completions.order_by("pk").values_list("pk", flat=True)
    row = result_row(first, "answer", timezone.now())
    row["prompt_tokens"] = -5  # refused by the column's check (unsigned on MySQL)
    with pytest.raises(DatabaseError), transaction.atomic():
        update_from_values(ModelCompletion, key_fields=("id",), set_fields=SET_FIELDS, rows=[row])
    assert (
        update_from_values(
            ModelCompletion,
            key_fields=("id",),
            set_fields=SET_FIELDS,
            rows=[result_row(second, "fine", timezone.now())],
        )
        == 1
    )
    assert ModelCompletion.objects.get(pk=second).raw_response == "fine"
    assert ModelCompletion.objects.get(pk=first).raw_response == ""


def test_invalid_request_after_a_streamed_chunk_creates_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows already sent (a COPY on PostgreSQL) are rolled back with the rest."""
    from raif_batches import api, create_batch
    from raif_batches.models import ModelCompletionBatch

    monkeypatch.setattr(api, "INSERT_CHUNK", 5)
    requests: list[dict[str, Any]] = [
        {"custom_id": f"ok-{i}", "messages": user(f"Q{i}")} for i in range(12)
    ]
    requests.append({"custom_id": "bad", "messages": user("Q"), "temperature": 9})
    with pytest.raises(ValueError, match="temperature"):
        create_batch(requests=requests)
    assert ModelCompletionBatch.objects.count() == 0
    assert ModelCompletion.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_update_outside_a_transaction_commits_and_leaves_no_temporary_table() -> None:
    batch = make_batch(2)
    pks = list(batch.completions.order_by("pk").values_list("pk", flat=True))
    assert connection.get_autocommit()
    for _ in range(2):  # the second call finds no table left by the first
        update_from_values(
            ModelCompletion,
            key_fields=("id",),
            set_fields=SET_FIELDS,
            rows=[result_row(pk, "done", timezone.now()) for pk in pks],
        )
    assert set(ModelCompletion.objects.values_list("raw_response", flat=True)) == {"done"}
    if POSTGRESQL:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'raif_bulk_%%'")
            assert cursor.fetchone()[0] == 0


def test_requests_whose_validation_reads_the_database_are_all_inserted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A source's content type may be read while requests are validated: rows are drawn
    before each COPY starts, since an open COPY holds the connection (a query then would wait
    on it forever)."""
    from django.contrib.auth.models import Group, Permission
    from django.contrib.contenttypes.models import ContentType

    from raif_batches import api, create_batch

    monkeypatch.setattr(api, "INSERT_CHUNK", 2)
    group = Group.objects.create(name="reviewers")
    permission = Permission.objects.order_by("pk").first()
    assert permission is not None
    ContentType.objects.clear_cache()
    sources = [group, group, group, permission, group]
    batch = create_batch(
        requests=[
            {"custom_id": f"s-{i}", "messages": user(f"Q{i}"), "source": source}
            for i, source in enumerate(sources)
        ]
    )
    stored = batch.completions.order_by("batch_custom_id")
    assert [c.source_object_id for c in stored] == [str(s.pk) for s in sources]
    assert stored[3].source_content_type == ContentType.objects.get_for_model(Permission)
