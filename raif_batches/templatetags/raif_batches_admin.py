"""Template tags of the raif_batches admin: ``{% raif_result_list cl %}``.

``admin/raif_batches/change_list.html`` uses it in place of Django's ``{% result_list cl %}``
for both change lists: the same table from the same templates, with each row rendered once per
page rather than cell by cell (``raif_batches.admin.rows``).
"""

from __future__ import annotations

from django import template
from django.contrib.admin.views.main import ChangeList
from django.utils.safestring import SafeString

from ..admin.rows import render_result_list

register = template.Library()


@register.simple_tag
def raif_result_list(cl: ChangeList) -> SafeString:
    return render_result_list(cl)
