"""raif_batches: LLM chat completions through provider Batch APIs, from Django.

Public API::

    from raif_batches import create_batch, create_batches, retry_failed, poll
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["create_batch", "create_batches", "poll", "retry_failed", "submit"]

if TYPE_CHECKING:
    from .api import create_batch, create_batches, retry_failed
    from .polling import poll, submit


def __getattr__(name: str) -> Any:
    # Imported lazily: the models cannot be imported before Django's app registry is ready.
    if name in ("create_batch", "create_batches", "retry_failed"):
        from . import api

        return getattr(api, name)
    if name in ("poll", "submit"):
        from . import polling

        return getattr(polling, name)
    raise AttributeError(f"module 'raif_batches' has no attribute {name!r}")
