"""Per-object action buttons: the list's admin actions, offered one by one on an object's page.

A ``ModelAdmin`` that mixes this in gets a POST-only URL ``<id>/run/<action>/`` (named
``<app>_<model>_run``) and, on its change page, a bar of buttons (``raif_actions`` in the
template context), one per action that the user may run and that applies to the object now.

Rules: the button runs the very function the list runs, on a queryset of this one object, so
there is one implementation of each action; what the user may run comes from Django's own
``get_actions`` (permissions included), so a hidden action cannot be reached by URL either;
what applies now is the admin's ``action_applies(name, obj)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.urls import URLPattern, path, reverse


def action_parts(entry: Any) -> tuple[Callable[..., Any], str]:
    """(function, label) of an entry of ``get_actions()``, on every supported Django.

    Django 6.1 returns ``Action`` objects and deprecates indexing or unpacking them (a warning
    per action per page); earlier versions return plain ``(function, name, description)``
    tuples, which have no attributes.
    """
    if hasattr(entry, "func"):
        return entry.func, str(entry.description)
    function, _, description = entry
    return function, str(description)


class ObjectActionsMixin:
    """Buttons on the change page for the admin actions in ``object_actions``."""

    #: Action names offered as buttons, in order; the names are entries of ``actions``.
    object_actions: tuple[str, ...] = ()
    #: Actions shown as dangerous (red) buttons.
    danger_actions: tuple[str, ...] = ()

    # Provided by ModelAdmin.
    opts: Any
    admin_site: Any
    get_actions: Callable[..., Any]
    get_queryset: Callable[..., Any]
    has_view_or_change_permission: Callable[..., bool]

    def action_applies(self, name: str, obj: Any) -> bool:
        """Whether action ``name`` makes sense for ``obj`` now (permission aside)."""
        return True

    def _run_url_name(self) -> str:
        return f"{self.opts.app_label}_{self.opts.model_name}_run"

    def get_urls(self) -> list[URLPattern]:
        extra = [
            path(
                "<path:object_id>/run/<str:action>/",
                self.admin_site.admin_view(self.run_action_view),
                name=self._run_url_name(),
            )
        ]
        return extra + super().get_urls()  # type: ignore[misc]

    def permitted_actions(self, request: HttpRequest) -> dict[str, tuple[Callable[..., Any], str]]:
        """The object actions the user may run: name -> (function, label)."""
        offered = self.get_actions(request)
        permitted: dict[str, tuple[Callable[..., Any], str]] = {}
        for name in self.object_actions:
            if name in offered:
                permitted[name] = action_parts(offered[name])
        return permitted

    def applicable_actions(self, request: HttpRequest, obj: Any) -> list[str]:
        """The permitted actions that make sense for ``obj`` now, for its page's buttons."""
        return [name for name in self.permitted_actions(request) if self.action_applies(name, obj)]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        obj = self.get_object(request, unquote(object_id))
        if obj is not None:
            permitted = self.permitted_actions(request)
            extra_context["raif_actions"] = [
                {
                    "name": name,
                    "label": permitted[name][1],
                    "url": reverse(f"admin:{self._run_url_name()}", args=[obj.pk, name]),
                    "danger": name in self.danger_actions,
                }
                for name in self.applicable_actions(request, obj)
            ]
        return super().change_view(request, object_id, form_url, extra_context)  # type: ignore[misc,no-any-return]

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Any:
        # change_view asks twice (for the buttons, then for the form): read the row once.
        cache: dict[str, Any] = request.__dict__.setdefault("_raif_object_cache", {})
        key = f"{self.opts.label}:{from_field}:{object_id}"
        if key not in cache:
            cache[key] = super().get_object(request, object_id, from_field)  # type: ignore[misc]
        return cache[key]

    def run_action_view(
        self, request: HttpRequest, object_id: str, action: str
    ) -> HttpResponseBase:
        """Run one admin action on one object from its page, then return to the page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = self.get_object(request, unquote(object_id))
        if obj is None or not self.has_view_or_change_permission(request, obj):
            raise PermissionDenied
        permitted = self.permitted_actions(request)
        if action not in permitted:
            raise PermissionDenied
        function = permitted[action][0]
        response = function(self, request, self.get_queryset(request).filter(pk=obj.pk))
        if isinstance(response, HttpResponseBase):
            return response
        return HttpResponseRedirect(
            reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[obj.pk])
        )
