"""Provider registry: a provider key maps to a dotted path of a BatchStrategy subclass."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.utils.module_loading import import_string

from ..conf import get_setting
from ..exceptions import BatchConfigurationError

if TYPE_CHECKING:
    from .base import BatchStrategy

BUILTIN_PROVIDERS = {
    "xai": "raif_batches.providers.xai.XAIStrategy",
    "openai": "raif_batches.providers.openai.OpenAIStrategy",
    "anthropic": "raif_batches.providers.anthropic.AnthropicStrategy",
}


def provider_paths() -> dict[str, str]:
    configured = get_setting("PROVIDERS")
    if not isinstance(configured, dict):
        raise BatchConfigurationError(
            "RAIF_BATCHES['PROVIDERS'] must map provider keys to dotted paths."
        )
    return {**BUILTIN_PROVIDERS, **configured}


def get_strategy_class(provider: str) -> type[BatchStrategy]:
    paths = provider_paths()
    if provider not in paths:
        raise ValueError(
            f"Unknown provider {provider!r}; known providers: {', '.join(sorted(paths))}."
        )
    try:
        return import_string(paths[provider])  # type: ignore[no-any-return]
    except ImportError as error:
        raise BatchConfigurationError(
            f"RAIF_BATCHES['PROVIDERS'][{provider!r}] = {paths[provider]!r} cannot be imported: "
            f"{error}"
        ) from error


def get_strategy(provider: str) -> BatchStrategy:
    return get_strategy_class(provider)()
