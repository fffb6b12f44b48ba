"""A Griffe extension for the API reference: Sphinx roles in docstrings become code.

imgzoo's docstrings name other objects the Sphinx way (``:class:`DataSpec```,
``:func:`imgzoo.fit```), which reads well in ``help()`` and in an editor. mkdocstrings
renders docstrings as Markdown, where the role would show as literal text; here each
role becomes a plain code span (``~a.b.c`` gives ``c``, as in Sphinx).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`(~?)([^`]+)`")


def plain_code(text: str) -> str:
    """``:class:`~a.B``` -> ```B```; ``:func:`a.f``` -> ```a.f```."""
    return ROLE.sub(lambda m: f"`{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}`", text)


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_code(obj.docstring.value)
