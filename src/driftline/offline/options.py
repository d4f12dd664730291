"""How a message names a setting: as the command line spells it, or as Python does.

The column roles (:mod:`driftline.offline.roles`) are read for ``driftline reference
build`` and ``driftline replay`` and for the notebook API alike, and their errors and notes
tell the user what to set. At a shell that is a flag (``--scores CLASS=COLUMN``); in a
notebook it is a keyword argument (``scores={'CLASS': 'COLUMN'}``). The notebook API runs
its calls inside :func:`python_spelling`; everything else gets the flags.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["no_column", "option", "python_spelling"]

_PYTHON: ContextVar[bool] = ContextVar("driftline_python_spelling", default=False)

#: Flags whose keyword has another name.
_KEYWORDS = {"labels-columns": "label_columns", "model": "model_id", "version": "model_version"}
#: Keywords that take a list of column names.
_LISTS = frozenset({"exclude", "features"})


@contextmanager
def python_spelling() -> Iterator[None]:
    """Within the block, :func:`option` spells settings as keyword arguments."""
    token = _PYTHON.set(True)
    try:
        yield
    finally:
        _PYTHON.reset(token)


def no_column(flag: str) -> str:
    """The setting that says a table has no column for role ``flag`` (an empty name).

    Examples
    --------
    >>> no_column("id")
    "--id ''"
    >>> with python_spelling():
    ...     no_column("id")
    "id=''"
    """
    if not _PYTHON.get():
        return f"--{flag} ''"
    return f"{_KEYWORDS.get(flag, flag.replace('-', '_'))}=''"


def option(flag: str, value: str = "") -> str:
    """The setting ``flag`` (without dashes) with ``value``, spelled for the caller.

    ``value`` is what the flag takes on the command line: one word, or ``KEY=VALUE``
    pairs joined by commas (a mapping in Python).

    Examples
    --------
    >>> option("scores", "CLASS=COLUMN")
    '--scores CLASS=COLUMN'
    >>> with python_spelling():
    ...     option("scores", "CLASS=COLUMN"), option("exclude", "x"), option("label")
    ("scores={'CLASS': 'COLUMN'}", "exclude=['x']", 'label')
    """
    if not _PYTHON.get():
        # quoted as a shell needs it (a time layout has a space)
        return f"--{flag} {shlex.quote(value)}" if value else f"--{flag}"
    name = _KEYWORDS.get(flag, flag.replace("-", "_"))
    if not value:
        return f"{name}=[...]" if flag in _LISTS else name
    if "=" in value:
        pairs = dict(p.split("=", 1) for p in value.split(","))
        return f"{name}={pairs!r}"
    if flag in _LISTS:
        return f"{name}={[value]!r}"
    return f"{name}={value!r}"
