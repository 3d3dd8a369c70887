"""Values shown in gate and e-mail markdown render as the literal text, in paragraphs and table cells.

Rendered with a GitHub-flavoured parser (tables on), as the Airflow UI renders a gate's body.
"""

from __future__ import annotations

import html
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from managed_upgrade.markdown import code, md

GFM = MarkdownIt("gfm-like")
NASTY = [
    "a|b",
    "`tick`",
    "``",
    "*bold* _it_ [link](x) <b>",
    "# heading",
    "back\\slash",
    "~~gone~~",
    "x | `y` | z",
    "&amp; &#65;",
]
one_line_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1).filter(str.strip)


def cells(markdown: str) -> list[tuple[str, str]]:
    """(tag, inner html) of every cell of the rendered table."""
    return re.findall(r"<(td|th)>(.*?)</\1>", GFM.render(markdown), re.DOTALL)


def paragraph(markdown: str) -> str:
    rendered = GFM.render(markdown).strip()
    assert rendered.startswith("<p>") and rendered.endswith("</p>"), rendered
    return rendered[3:-4]


@pytest.mark.parametrize("value", NASTY)
def test_code_in_a_cell_keeps_the_row_whole_and_shows_the_value(value: str) -> None:
    table = f"| Setting | Value |\n|---|---|\n| {code(value, cell=True)} | after |\n"
    rendered = cells(table)
    assert len(rendered) == 4, rendered
    assert rendered[2] == ("td", f"<code>{html.escape(value, quote=False)}</code>")
    assert rendered[3] == ("td", "after")


@pytest.mark.parametrize("value", NASTY)
def test_code_outside_a_table_shows_the_value_without_escapes(value: str) -> None:
    assert paragraph(f"before {code(value)} after") == (
        f"before <code>{html.escape(value, quote=False)}</code> after"
    )


@pytest.mark.parametrize("value", NASTY)
def test_md_in_a_cell_shows_markup_and_entities_literally(value: str) -> None:
    rendered = cells(f"| A | B |\n|---|---|\n| {md(value)} | end |\n")
    assert rendered[2:] == [("td", html.escape(value, quote=False)), ("td", "end")], rendered


@given(one_line_text)
def test_md_in_a_cell_is_one_cell_holding_the_text_on_one_line(value: str) -> None:
    rendered = cells(f"| A | B |\n|---|---|\n| {md(value)} | end |\n")
    assert len(rendered) == 4 and rendered[3] == ("td", "end"), rendered
    shown = html.unescape(re.sub(r"<[^>]+>", "", rendered[2][1]))
    assert shown == " ".join(value.split())


def test_md_and_code_put_multi_line_text_on_one_line() -> None:
    assert md("line one\nline two\t end") == "line one line two end"
    assert code("a\n  b") == "`a b`"
