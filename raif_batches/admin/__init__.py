"""The Django admin for batches and completions: watch them, and steer them safely.

The package, as Django's own admin is split:

- ``batches``: the batch admin (configuration, list columns, the batch page, deletion rules);
- ``completions``: the view-only completion admin;
- ``actions``: the batch actions, module-level ``@admin.action`` functions, each with its own
  permission;
- ``object_actions``: the mixin that offers those actions as buttons on a batch's page;
- ``filters`` and ``changelists``: sidebar filters and counts that stay cheap at millions of rows;
- ``rows``: the change lists' rows, rendered once per page rather than cell by cell (through
  ``templates/admin/raif_batches/change_list.html`` and the ``raif_batches_admin`` tag library);
- ``rendering``: the small renderers (badges, money, times, progress, JSON), with the larger
  HTML fragments as templates under ``templates/raif_batches/admin/``.

Registration happens here, on import, as ``admin.autodiscover()`` expects.
"""

from django.contrib import admin

from ..models import ModelCompletion, ModelCompletionBatch
from .batches import ModelCompletionBatchAdmin
from .completions import ModelCompletionAdmin

admin.site.register(ModelCompletionBatch, ModelCompletionBatchAdmin)
admin.site.register(ModelCompletion, ModelCompletionAdmin)

__all__ = ["ModelCompletionAdmin", "ModelCompletionBatchAdmin"]
