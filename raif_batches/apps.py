from django.apps import AppConfig


class RaifBatchesConfig(AppConfig):
    name = "raif_batches"
    verbose_name = "LLM batches"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import (
            checks,  # noqa: F401  (registers the system checks)
            signals,  # noqa: F401  (connects the delete guard)
        )
