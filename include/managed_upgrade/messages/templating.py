"""The one template environment for what people read: customer e-mails and the bodies of human gates.

Wording lives in ``templates/`` next to this module, one template per message and format, so it can
change without touching the code that decides what to say:

- ``*.txt.j2``  plain text (e-mail bodies, e-mail and gate subjects), not escaped;
- ``*.html.j2`` HTML e-mail bodies, every value escaped (autoescaping by file name);
- ``*.md.j2``   markdown gate bodies; values are escaped explicitly with the ``md``, ``code`` and
  ``fenced`` filters, the same helpers the bodies used before they were templates.

Templates whose name starts with ``_`` hold the parts several messages share (greeting, signature,
tables, layout); they are imported by the messages, never rendered on their own.

Values from customer configs, hosts and answers are DATA passed into a template, never template
source: the templates are files of this package, and a ``{{`` in a customer's name is printed as it
is. The environment is sandboxed all the same (no access to private attributes, no mutation of
lists and dicts), and undefined names are errors, so a misspelt value fails a test instead of
printing nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
from jinja2.sandbox import ImmutableSandboxedEnvironment

from managed_upgrade.markdown import code, md

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATE_SUFFIXES = (".txt.j2", ".html.j2", ".md.j2")
TEXT_TABLE_WIDTH = 100
"""Wider plain-text tables are written as one ``header: value`` record per row."""


# --- filters and functions the templates use -----------------------------------------------------


def fenced(text: str) -> str:
    """``text`` verbatim in a markdown code fence longer than any backtick run inside it."""
    run, longest = 0, 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text.rstrip()}\n{fence}"


def enumeration(items: Iterable[Any], conjunction: str) -> str:
    """``a``, ``a and b``, ``a, b and c`` (``conjunction`` comes from the template: it is wording)."""
    words = [str(item) for item in items]
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + f" {conjunction} " + words[-1]


@jinja2.pass_eval_context
def nl2br(eval_ctx: jinja2.nodes.EvalContext, value: Any) -> str:
    """Line breaks of a value as ``<br>`` in HTML, the value escaped; unchanged in plain text."""
    if not eval_ctx.autoescape:
        return str(value)
    return markupsafe.escape(value).replace("\n", markupsafe.Markup("<br>\n"))


def text_table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """Aligned columns; a table too wide for a mail client becomes one ``header: value`` record per row."""
    head = [str(cell) for cell in header]
    body = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[index]) for row in (head, *body)) for index in range(len(head))]
    if sum(widths) + 2 * (len(widths) - 1) > TEXT_TABLE_WIDTH:
        records = ("\n".join(f"{name}: {cell}" for name, cell in zip(head, row, strict=True)) for row in body)
        return "\n\n".join(records)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    lines = [line(head), line(["-" * width for width in widths]), *(line(row) for row in body)]
    return "\n".join(lines)


# --- the environment -----------------------------------------------------------------------------


def _environment() -> ImmutableSandboxedEnvironment:
    environment = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html.j2",), disabled_extensions=("txt.j2", "md.j2"), default=True
        ),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    environment.filters.update(md=md, code=code, fenced=fenced, nl2br=nl2br, enumeration=enumeration)
    environment.globals.update(text_table=text_table)
    return environment


ENVIRONMENT = _environment()


def template_names() -> list[str]:
    """Every template of the folder, sorted."""
    return sorted(ENVIRONMENT.list_templates(filter_func=lambda name: name.endswith(TEMPLATE_SUFFIXES)))


def render(name: str, /, **context: Any) -> str:
    """Template ``name`` rendered with ``context``; the output ends with the file's last line break."""
    return ENVIRONMENT.get_template(name).render(context)


def render_body(name: str, /, **context: Any) -> str:
    """A gate body: like :func:`render`, without the line break that ends the template file."""
    return render(name, **context).removesuffix("\n")


def macro(name: str, macro_name: str) -> Callable[..., str]:
    """Macro ``macro_name`` of template ``name`` as a function, for wording code needs as a value."""
    found = getattr(ENVIRONMENT.get_template(name).module, macro_name)

    def call(*args: Any, **kwargs: Any) -> str:
        return str(found(*args, **kwargs))

    return call
