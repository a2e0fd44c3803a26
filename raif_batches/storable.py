"""Make a provider's answer fit our columns, one line at a time, and say what was changed.

A single odd line must not stop a page from being stored: PostgreSQL refuses ``\\u0000`` in text
and in ``jsonb``, no database driver encodes a lone surrogate, the token columns hold
0..2,147,483,647 and the cost columns ten integer digits. What can be cleaned is cleaned (NUL and
lone surrogates are dropped, an impossible token count is left empty) and listed under
``_raif_cleaned`` in the line's stored payload; what cannot (a cost beyond the column) is
reported to the caller, which fails that one line with the reason.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

#: PositiveIntegerField's range on every supported database.
MAX_INTEGER = 2_147_483_647
#: DecimalField(max_digits=20, decimal_places=10): ten integer digits.
COST_LIMIT = Decimal(10) ** 10
CLEANED_KEY = "_raif_cleaned"


def _has_bad_characters(text: str) -> bool:
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def clean_text(text: str) -> tuple[str, bool]:
    """``text`` without NUL and lone surrogates, and whether anything was dropped."""
    if not _has_bad_characters(text):
        return text, False
    kept = "".join(ch for ch in text if ch != "\x00" and not "\ud800" <= ch <= "\udfff")
    return kept, True


def clean_json(value: Any) -> tuple[Any, bool]:
    """A JSON value with every string (keys included) cleaned, and whether anything was.

    Containers that need a change are fixed in place (they are freshly parsed answers). The
    walk is iterative, so a deeply nested answer costs no recursion here.
    """
    changed = False
    root = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        container, key = stack.pop()
        item = container[key]
        if isinstance(item, str):
            cleaned, dropped = clean_text(item)
            if dropped:
                container[key] = cleaned
                changed = True
        elif isinstance(item, dict):
            if any(isinstance(k, str) and _has_bad_characters(k) for k in item):
                item = {(clean_text(k)[0] if isinstance(k, str) else k): v for k, v in item.items()}
                container[key] = item
                changed = True
            stack.extend((item, k) for k in item)
        elif isinstance(item, list):
            stack.extend((item, i) for i in range(len(item)))
    return root[0], changed


def storable_count(value: int | None) -> int | None:
    """A token count the column can hold, or None."""
    if value is None or 0 <= value <= MAX_INTEGER:
        return value
    return None


def cost_fits(value: Decimal | None) -> bool:
    return value is None or abs(value) < COST_LIMIT
