"""MkDocs hook (see mkdocs.yml): render the Sphinx roles of xvit's docstrings as plain code in the API reference.

Docstrings write cross-references as ``:func:`xvit.explain``` and ``:class:`~xvit.methods.Method``` (Sphinx's
syntax, which shell help and IDEs show as it is); mkdocstrings leaves the role name in front of the code span. The
hook drops the role and, as Sphinx does for a leading ``~``, shows only the last part of the dotted name.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:func|class|meth|attr|data|mod|exc|obj):<code>(~?)([^<]*)</code>")


def _code(match: re.Match[str]) -> str:
    name = match.group(2)
    return f"<code>{name.rsplit('.', 1)[-1] if match.group(1) else name}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    """The page's HTML with every ``:role:<code>name</code>`` replaced by ``<code>name</code>``."""
    return ROLE.sub(_code, html)
