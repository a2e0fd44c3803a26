from django.contrib import admin

from .models import ModelCompletion, ModelCompletionBatch


@admin.register(ModelCompletionBatch)
class ModelCompletionBatchAdmin(admin.ModelAdmin):
    list_display = ("pk", "name", "provider", "model", "status", "total_cost", "created_at")
    list_filter = ("status", "provider", "model")
    search_fields = ("name", "provider_batch_id")


@admin.register(ModelCompletion)
class ModelCompletionAdmin(admin.ModelAdmin):
    list_display = ("pk", "batch", "batch_custom_id", "status", "total_tokens", "total_cost")
    list_filter = ("status",)
    search_fields = ("batch_custom_id",)
    raw_id_fields = ("batch",)
