"""Text from hosts, configs and people made safe to show in the markdown of gates and emails.

Values come from places nobody controls (a setting, a command's output, a consultant's note), so
every value is shown literally: on one line (a table cell) with markup characters escaped.
"""

from __future__ import annotations

import re
from typing import Any

_SPECIAL = str.maketrans({char: f"\\{char}" for char in "\\`*_[]<>|#~&"})


def md(value: Any) -> str:
    """Plain text safe in markdown and in a table cell: one line, markup characters escaped."""
    return " ".join(str(value).split()).translate(_SPECIAL)


def code(value: Any, *, cell: bool = False) -> str:
    """``value`` as inline code on one line (a fence longer than any backtick run inside it).

    ``cell=True`` for a table cell: GitHub-flavoured tables split rows at every ``|``, code spans
    included, and take ``\\|`` as a literal pipe there (outside a table it would show the backslash).
    """
    text = " ".join(str(value).split())
    if cell:
        text = text.replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"
