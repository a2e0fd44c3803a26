"""A PostgreSQL trigger that records every change of a completion's result and every stamp of
a batch's ``results_fetched_at``, across all processes, so "applied once" is observed, not
inferred. Loaded as a plugin by ``conftest.py``: the ``audit`` fixture."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

AUDIT_SQL = """
CREATE TABLE raif_test_audit (kind text NOT NULL, row_id bigint NOT NULL, value text);
CREATE FUNCTION raif_test_audit_completion() RETURNS trigger AS $$
BEGIN
    IF OLD.status IS DISTINCT FROM NEW.status
       OR OLD.completed_at IS DISTINCT FROM NEW.completed_at
       OR OLD.failed_at IS DISTINCT FROM NEW.failed_at
       OR OLD.total_cost IS DISTINCT FROM NEW.total_cost THEN
        INSERT INTO raif_test_audit VALUES ('result', NEW.id, NEW.status);
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE FUNCTION raif_test_audit_batch() RETURNS trigger AS $$
BEGIN
    IF OLD.results_fetched_at IS DISTINCT FROM NEW.results_fetched_at THEN
        INSERT INTO raif_test_audit VALUES ('harvest', NEW.id, NEW.status);
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER raif_test_audit_completion AFTER UPDATE ON raif_batches_modelcompletion
    FOR EACH ROW EXECUTE FUNCTION raif_test_audit_completion();
CREATE TRIGGER raif_test_audit_batch AFTER UPDATE ON raif_batches_modelcompletionbatch
    FOR EACH ROW EXECUTE FUNCTION raif_test_audit_batch();
"""
DROP_AUDIT_SQL = """
DROP TRIGGER IF EXISTS raif_test_audit_completion ON raif_batches_modelcompletion;
DROP TRIGGER IF EXISTS raif_test_audit_batch ON raif_batches_modelcompletionbatch;
DROP FUNCTION IF EXISTS raif_test_audit_completion();
DROP FUNCTION IF EXISTS raif_test_audit_batch();
DROP TABLE IF EXISTS raif_test_audit;
"""


@pytest.fixture
def audit() -> Iterator[Any]:
    """``audit(kind)`` → how many times each row id changed that way, across all processes."""
    with connection.cursor() as cursor:
        cursor.execute(DROP_AUDIT_SQL)
        cursor.execute(AUDIT_SQL)

    def changes(kind: str) -> Counter[int]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT row_id FROM raif_test_audit WHERE kind = %s", [kind])
            return Counter(row_id for (row_id,) in cursor.fetchall())

    yield changes
    with connection.cursor() as cursor:
        cursor.execute(DROP_AUDIT_SQL)
