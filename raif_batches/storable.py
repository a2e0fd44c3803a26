"""Make a provider's answer fit our columns, one line at a time, and say what was changed.

A single odd line must not stop a page from being stored: PostgreSQL refuses ``\\u0000`` in text
and in ``jsonb``, no database driver encodes a lone surrogate, the token columns hold
0..2,147,483,647 and the cost columns ten integer digits. What can be cleaned is cleaned (NUL and
lone surrogates are dropped, an impossible token count is left empty) and listed under
``_raif_cleaned`` in the line's stored payload; what cannot (a cost beyond the column) is
reported to the caller, which fails that one line with the reason.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

#: PositiveIntegerField's range on every supported database.
MAX_INTEGER = 2_147_483_647
#: DecimalField(max_digits=20, decimal_places=10): ten integer digits.
COST_LIMIT = Decimal(10) ** 10
CLEANED_KEY = "_raif_cleaned"


#: NUL, and the surrogate range: in a decoded str a surrogate is always a lone one.
_BAD_CHARACTERS = re.compile("[\x00\ud800-\udfff]")


def _has_bad_characters(text: str) -> bool:
    # Checked in C without a scan in Python: this runs on every string of every answer.
    if "\x00" in text:
        return True
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def clean_text(text: str) -> tuple[str, bool]:
    """``text`` without NUL and lone surrogates, and whether anything was dropped."""
    if not _has_bad_characters(text):
        return text, False
    return _BAD_CHARACTERS.sub("", text), True


def clean_json(value: Any) -> tuple[Any, bool]:
    """A JSON value with every string (keys included) cleaned, and whether anything was.

    A first pass only looks (every answer goes through it, so it does as little as it can);
    only an answer that needs it is copied clean. A value nested deeper than Python's recursion
    limit raises ``RecursionError``, which the caller turns into a failed line.
    """
    if not _dirty(value):
        return value, False
    return _cleaned(value), True


_SCALARS = (int, float, bool, type(None))


def _dirty(value: Any) -> bool:
    if isinstance(value, str):
        return _has_bad_characters(value)
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and _has_bad_characters(key):
                return True
            if not isinstance(item, _SCALARS) and _dirty(item):
                return True
        return False
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, _SCALARS) and _dirty(item):
                return True
    return False


def _cleaned(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)[0]
    if isinstance(value, dict):
        return {_cleaned(key): _cleaned(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_cleaned(item) for item in value]
    return value


def storable_count(value: int | None) -> int | None:
    """A token count the column can hold, or None."""
    if value is None or 0 <= value <= MAX_INTEGER:
        return value
    return None


def cost_fits(value: Decimal | None) -> bool:
    return value is None or abs(value) < COST_LIMIT
