"""The change lists' rows, rendered at a fraction of the cost of Django's ``items_for_result``.

Django renders each cell of a change list through ``lookup_field``, ``display_for_value``, a
``format_html`` for the cell and, on the linked column, a ``reverse()`` and a parse of the
preserved filters, every time; the template then loops over the cells. On a page of 100 batches
(9 columns) that machinery was about 10 ms of the 29 ms the rows took, the columns' own
formatting the rest. Here the work that is the same for every row is done once per page:

- what each column is (the action checkbox, a model field, a method of the admin) is decided
  once;
- the change URL is reversed once, with a marker in place of the primary key, its preserved
  filters added and the whole escaped once; each row puts its own key in;
- each row is one string of cells, in the markup Django writes (``th``/``td``, the
  ``field-<name>`` and ``action-checkbox`` classes, the link on the first linked column).

A column this does not know how to render the same way — a relation, a callable in
``list_display``, a second linked column — or an editable list or a popup sends the whole page
back to Django's own ``results``, so a subclass that adds one loses speed, never correctness.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote as url_quote

from django.contrib.admin.templatetags.admin_list import (
    ResultList,
    result_headers,
    result_hidden_fields,
    results,
)
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.utils import display_for_field, display_for_value, quote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.template.loader import select_template
from django.urls import NoReverseMatch, reverse
from django.utils.html import conditional_escape, escape
from django.utils.http import RFC3986_SUBDELIMS
from django.utils.safestring import SafeString, mark_safe

#: Stands for the primary key in the change URL reversed once per page.
PK_MARKER = "RaifPkMarker0"

Cell = Callable[[Any], str]


def result_list_context(cl: ChangeList) -> dict[str, Any]:
    """The context of ``change_list_results.html``, as Django's ``result_list`` builds it."""
    headers = list(result_headers(cl))
    rows = fast_results(cl)
    return {
        "cl": cl,
        "result_hidden_fields": list(result_hidden_fields(cl)),
        "result_headers": headers,
        "num_sorted_fields": sum(1 for h in headers if h["sortable"] and h["sorted"]),
        "results": rows if rows is not None else list(results(cl)),
    }


def render_result_list(cl: ChangeList) -> SafeString:
    """The results table, from the same templates, in the same order, as ``{% result_list %}``."""
    opts = cl.opts
    template = select_template(
        [
            f"admin/{opts.app_label}/{opts.model_name}/change_list_results.html",
            f"admin/{opts.app_label}/change_list_results.html",
            "admin/change_list_results.html",
        ]
    )
    return mark_safe(template.render(result_list_context(cl)))


def fast_results(cl: ChangeList) -> list[ResultList] | None:
    """Every row as one ``ResultList`` of one string, or None where Django must render them."""
    links = cl.list_display_links
    if cl.formset is not None or cl.is_popup or cl.to_field or not links:
        return None
    columns: list[tuple[str, str, Cell]] = []  # (start tag, end tag, cell content) per column
    linked = False
    for name in cl.list_display:
        column = column_renderer(cl, name, avoid_link=name in links)
        if column is None:
            return None
        css, cell = column
        if name == "action_checkbox":
            columns.append(('<td class="action-checkbox">', "</td>", cell))
        elif name in links:
            link = None if linked else link_renderer(cl, cell)
            if link is None:
                return None  # a second linked column, or no change URL: Django's own markup
            columns.append((f'<th class="{css}">', "</th>", link))
            linked = True
        else:
            columns.append((f'<td class="{css}">', "</td>", cell))
    return [
        ResultList(
            None,
            [mark_safe("".join(f"{start}{cell(obj)}{end}" for start, end, cell in columns))],
        )
        for obj in cl.result_list
    ]


def column_renderer(cl: ChangeList, name: Any, avoid_link: bool) -> tuple[str, Cell] | None:
    """The column's classes and a function of the row that renders its content, escaped.

    ``avoid_link``: the cell goes inside the row's link, so a field must not add a link of its
    own (Django's ``display_for_field`` argument of that name).
    """
    model_admin = cl.model_admin
    if not isinstance(name, str) or name == "__str__":
        return None
    empty = model_admin.get_empty_value_display()
    try:
        field = cl.lookup_opts.get_field(name)
    except FieldDoesNotExist:
        pass
    else:
        # As Django's lookup_field: a model field first. Relations are left to Django.
        if not isinstance(field, models.Field) or field.is_relation:
            return None
        attname = field.attname
        nowrap = isinstance(field, (models.DateField, models.TimeField))

        def field_cell(obj: Any) -> str:
            value = getattr(obj, attname)
            if isinstance(value, str) and not value.strip():
                value = ""
            return conditional_escape(display_for_field(value, field, empty, avoid_link))

        return (f"field-{name} nowrap" if nowrap else f"field-{name}"), field_cell
    method = getattr(model_admin, name, None)
    if not callable(method):
        return None
    empty = getattr(method, "empty_value_display", empty)
    boolean = getattr(method, "boolean", False)

    def method_cell(obj: Any) -> str:
        value = method(obj)
        if isinstance(value, SafeString) and value.strip():
            return value
        if isinstance(value, str) and not value.strip():
            value = ""
        return conditional_escape(display_for_value(value, empty, boolean))

    return f"field-{name}", method_cell


def link_renderer(cl: ChangeList, cell: Cell) -> Cell | None:
    """The cell wrapped in a link to the row's change page, with the list's filters kept."""
    opts = cl.opts
    try:
        url = reverse(
            f"admin:{opts.app_label}_{opts.model_name}_change",
            args=(PK_MARKER,),
            current_app=cl.model_admin.admin_site.name,
        )
    except NoReverseMatch:
        return None
    url = add_preserved_filters({"preserved_filters": cl.preserved_filters, "opts": opts}, url)
    head, marker, tail = str(conditional_escape(url)).partition(PK_MARKER)
    if not marker or PK_MARKER in tail:
        return None
    pk_name = cl.lookup_opts.pk.attname

    def linked(obj: Any) -> str:
        # What reverse() does to the admin-quoted key, then the HTML escape of the whole.
        pk = escape(url_quote(str(quote(getattr(obj, pk_name))), safe=RFC3986_SUBDELIMS + "/~:@"))
        return f'<a href="{head}{pk}{tail}">{cell(obj)}</a>'

    return linked
