"""CSV (and TSV) files, read column by column.

CSV has no types, so its cells are read as text: empty, ``NA``, ``NaN``, ``null``,
``None`` (and the like) are missing; ``True``/``False`` in any case are booleans;
what ``float()`` reads is a number; the rest is a string. A column with a number
written with leading zeros (``01234``, ``007``: zip codes, account numbers, product
codes; not ``0`` or ``0.5``) is a code: read as its text, so ``01234`` stays ``01234``
and is a category, not the number 1234 (:attr:`CsvTable.text_codes`). A CSV file is read twice
(numbers on the first pass, the text of the columns that need it on the second), so
half a million rows of twenty columns stay well under a gigabyte. A ``.csv`` file is
separated by what splits its header line into the most fields: where the comma is the
decimal mark, spreadsheets and ``to_csv(sep=";", decimal=",")`` write semicolons, and
such a file's numbers may have a decimal comma.
"""

from __future__ import annotations

import csv
import math
import re
from array import array
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.errors import InputError
from driftline.offline.table_base import (
    BOOL_TOKENS,
    CHUNK_ROWS,
    DISTINCT_CAP,
    MISSING_TOKENS,
    PROGRESS_ROWS,
    UNREADABLE,
    ColumnStats,
    Table,
    check_names,
    open_text,
    progress,
    unreadable,
)

__all__ = ["CsvTable", "csv_cell", "sniff_separator"]


#: A number with commas between groups of three digits (``82,614``, ``-1,234,567.5``):
#: what spreadsheets and ``f"{x:,}"`` write, quoted in a CSV file.
_GROUPED = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def csv_cell(tok: str, decimal_comma: bool = False) -> Any:
    """The plain value of one CSV cell (see the module docstring); with
    ``decimal_comma``, ``1,5`` is the number 1.5 (a file separated by semicolons),
    else ``82,614`` is the number 82614 (commas between groups of three digits)."""
    if tok in MISSING_TOKENS:
        return None
    b = BOOL_TOKENS.get(tok.lower()) if len(tok) in (4, 5) else None
    if b is not None:
        return b
    try:
        f = _float_comma(tok) if decimal_comma else float(tok)
    except ValueError:
        if decimal_comma or not _GROUPED.fullmatch(tok):
            return tok
        tok = tok.replace(",", "")
        f = float(tok)
    if f.is_integer() and tok.lstrip("+-").isdigit():
        return int(tok)
    return f


def _float_comma(tok: str) -> float:
    """``float`` of a cell that may write its decimal point as a comma (``-1,5e-3``):
    what Excel and ``to_csv(sep=";", decimal=",")`` write where the comma is the
    decimal mark. A cell with a comma and a point (``1.234,5``) is not a number."""
    if "," in tok:
        if "." in tok or tok.count(",") > 1:
            raise ValueError(tok)
        tok = tok.replace(",", ".")
    return float(tok)


#: A cell that is a number written with leading zeros (``01234``, ``00``), at the start
#: of a line of the column's cells joined by newlines.
_LEADING_ZERO = re.compile(r"^0[0-9]+$", re.MULTILINE)


def _leading_zeros(tok: str) -> bool:
    """Whether ``tok`` is digits only and starts with a zero (``01234``; not ``0``)."""
    return len(tok) > 1 and tok[0] == "0" and tok.isascii() and tok.isdigit()


#: Separators a ``.csv`` file may use, by preference when its header splits alike.
_SEPARATORS = (",", ";", "\t", "|")


def sniff_separator(path: Path, encoding: str | None = None) -> str:
    """The separator of a ``.csv`` file: the one that splits its header line into the
    most fields (a comma when none splits it). Spreadsheets where the comma is the
    decimal mark write semicolons (``to_csv(sep=";", decimal=",")``)."""
    with open_text(path, encoding) as fh:
        try:
            header = fh.readline()
        except UNREADABLE as exc:
            raise unreadable(path, 0, exc, encoding) from None
    best, fields = ",", 1
    for sep in _SEPARATORS:
        n = len(next(csv.reader([header], delimiter=sep), []))
        if n > fields:
            best, fields = sep, n
    return best


class CsvTable(Table):
    """A CSV file with a header line (see the module docstring).

    Rows are read in chunks and each chunk column by column: a column of numbers (and
    missing cells) is parsed by numpy in one call; any other column is read by its
    distinct cells (each cell text is classified once), which keeps the text of
    columns that are not numbers. A column that turns out to need its text only later
    (an id of numbers, say) is read again on demand (:meth:`values`).
    """

    def __init__(self, path: Path, delimiter: str = ",", encoding: str | None = None) -> None:
        self.path = path
        #: Columns read as text for their numbers written with leading zeros, each
        #: with the first such cell (``{"zip": "01234"}``).
        self.text_codes: dict[str, str] = {}
        #: The numbers' reading of the columns read as text (:meth:`as_numbers`).
        self._as_read: dict[str, tuple[ColumnStats, NDArray[np.float64], NDArray[np.bool_]]] = {}
        codes: dict[int, str] = {}
        self.source = path.name
        self.delimiter = delimiter
        #: The file's text encoding as the user gave it (``None``: UTF-8).
        self.encoding = encoding
        #: Semicolons separate the fields where the comma is the decimal mark.
        self.decimal_comma = delimiter == ";"
        with open_text(path, encoding) as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            try:
                header = next(reader)
            except StopIteration:
                raise InputError(f"{path}: empty file (no header line)") from None
            except csv.Error as exc:
                raise InputError(f"{path}, line 1: {exc}") from None
            except UNREADABLE as exc:
                raise unreadable(path, 0, exc, encoding) from None
            # pandas reads a column without a name (the index ``to_csv`` writes by
            # default) as ``Unnamed: <position>``: the same name here, so the roles
            # table can say what it is.
            self.names = [h.strip() or f"Unnamed: {i}" for i, h in enumerate(header)]
            check_names(self.names, path.name)
            k = len(self.names)
            self._chunks: list[list[NDArray[np.float64]]] = [[] for _ in range(k)]
            self._odd_chunks: list[list[NDArray[np.bool_]]] = [[] for _ in range(k)]
            stats = [ColumnStats() for _ in range(k)]
            texts: list[list[Any] | None] = [None] * k
            numeric = [True] * k
            lines = array("q")
            show = progress(path.name)
            row = 0
            chunk: list[list[str]] = []
            try:
                for cells in reader:
                    if not cells:
                        continue  # a blank line
                    if len(cells) != k:
                        raise InputError(
                            f"{path}, line {reader.line_num}: {len(cells)} fields, "
                            f"the header has {k}"
                        )
                    lines.append(reader.line_num)
                    chunk.append(cells)
                    if len(chunk) == CHUNK_ROWS:
                        self._read_chunk(chunk, row, stats, texts, numeric, codes)
                        row += len(chunk)
                        chunk = []
                        if row % PROGRESS_ROWS == 0:
                            show(row, False)
            except csv.Error as exc:
                raise InputError(f"{path}, line {reader.line_num}: {exc}") from None
            except UNREADABLE as exc:
                raise unreadable(path, reader.line_num, exc, encoding) from None
            if chunk:
                self._read_chunk(chunk, row, stats, texts, numeric, codes)
                row += len(chunk)
            show(row, True)
        self.n_rows = row
        self._lines = lines
        self._stats = dict(zip(self.names, stats, strict=True))
        self._floats = {
            n: np.concatenate(c) if c else np.zeros(0)
            for n, c in zip(self.names, self._chunks, strict=True)
        }
        self._odd = {
            n: np.concatenate(c) if c else np.zeros(0, np.bool_)
            for n, c in zip(self.names, self._odd_chunks, strict=True)
        }
        del self._chunks, self._odd_chunks
        self._values: dict[str, list[Any]] = {
            n: t for n, t in zip(self.names, texts, strict=True) if t is not None
        }
        for j in sorted(codes):
            self.text_codes[self.names[j]] = codes[j]
        self.as_text(list(self.text_codes))

    def _read_chunk(
        self,
        chunk: list[list[str]],
        row0: int,
        stats: list[ColumnStats],
        texts: list[list[Any] | None],
        numeric: list[bool],
        codes: dict[int, str],
    ) -> None:
        missing = MISSING_TOKENS
        nan = math.nan
        number = _float_comma if self.decimal_comma else float
        for j, toks in enumerate(zip(*chunk, strict=True)):
            st = stats[j]
            if numeric[j]:
                try:
                    arr = np.array([nan if t in missing else number(t) for t in toks], np.float64)
                except ValueError:
                    numeric[j] = False
                else:
                    self._numbers(j, arr, st)
                    if j not in codes:
                        # one search of the chunk's cells, not a Python test of each
                        found = _LEADING_ZERO.search("\n".join(toks))
                        if found is not None:
                            codes[j] = found.group()
                    continue
            if texts[j] is None:  # the column turned out not to be numbers: keep its text
                texts[j] = [] if row0 == 0 else None
            code = self._mixed(j, toks, row0, st, texts[j])
            if code is not None and j not in codes:
                codes[j] = code

    def _numbers(self, j: int, arr: NDArray[np.float64], st: ColumnStats) -> None:
        nan = np.isnan(arr)
        n_missing = int(nan.sum())
        st.rows += arr.size
        st.missing += n_missing
        st.numbers += arr.size - n_missing
        ok = arr[~nan]
        whole = ok == np.floor(ok)
        st.integers += int(whole.sum())
        if len(st.distinct) < DISTINCT_CAP:
            for v in np.unique(ok)[:DISTINCT_CAP].tolist():
                st.distinct.add(repr(int(v)) if v.is_integer() else repr(v))
        self._chunks[j].append(arr)
        self._odd_chunks[j].append(np.zeros(arr.size, np.bool_))

    def _mixed(
        self, j: int, toks: Sequence[str], row0: int, st: ColumnStats, keep: list[Any] | None
    ) -> str | None:
        """Count a chunk's cells of a column that is not all numbers; the first cell
        written with leading zeros, if any."""
        counts = Counter(toks)
        seen = {tok: csv_cell(tok, self.decimal_comma) for tok in counts}
        vals = [seen[t] for t in toks]
        first = None
        for tok, n in counts.items():
            v = seen[tok]
            st.see_many(v, n)
            if st.grouped is None and "," in tok and (type(v) is int or type(v) is float):
                st.grouped = tok
            if first is None and v is not None and type(v) is not int and type(v) is not float:
                first = tok
        if st.first_non_number is None and first is not None:
            st.first_non_number = (row0 + toks.index(first), seen[first])
        nan = math.nan
        self._chunks[j].append(
            np.array([v if type(v) is float or type(v) is int else nan for v in vals], np.float64)
        )
        self._odd_chunks[j].append(
            np.array(
                [v is not None and type(v) is not float and type(v) is not int for v in vals],
                np.bool_,
            )
        )
        if keep is not None:
            keep.extend(vals)
        return next((tok for tok in counts if _leading_zeros(tok)), None)

    def as_text(self, names: Sequence[str]) -> bool:
        """Read columns ``names`` as their cells' text (a missing cell is None): a code
        written with leading zeros (``01234``) stays as written. Their statistics are
        those of strings and :meth:`floats` NaN; :meth:`as_numbers` reads one as numbers
        again."""
        want = [n for n in names if n not in self._as_read]
        if not want:
            return True
        idx = [self.names.index(n) for n in want]
        cols: list[list[Any]] = [[] for _ in want]
        missing = MISSING_TOKENS
        with open_text(self.path, self.encoding) as fh:
            reader = csv.reader(fh, delimiter=self.delimiter)
            next(reader)
            for cells in reader:
                if cells:
                    for c, j in enumerate(idx):
                        tok = cells[j]
                        cols[c].append(None if tok in missing else tok)
        for n, col in zip(want, cols, strict=True):
            self._as_read[n] = (self._stats[n], self._floats[n], self._odd[n])
            st = ColumnStats()
            for row, v in enumerate(col):
                st.see(row, v)
            self._stats[n] = st
            self._values[n] = col
            self._floats[n] = np.full(len(col), np.nan)
            self._odd[n] = np.array([v is not None for v in col], np.bool_)
        return True

    def as_numbers(self, name: str) -> None:
        """Read column ``name``, read as text by :meth:`as_text`, as numbers again (as
        before codes with leading zeros were read as text: a reference built so)."""
        read = self._as_read.pop(name, None)
        if read is not None:
            self._stats[name], self._floats[name], self._odd[name] = read
            del self._values[name]
        self.text_codes.pop(name, None)

    def stats(self, name: str) -> ColumnStats:
        return self._stats[name]

    def floats(self, name: str) -> NDArray[np.float64]:
        return self._floats[name]

    def non_numbers(self, name: str) -> NDArray[np.bool_]:
        return self._odd[name]

    def values(self, names: Sequence[str]) -> dict[str, list[Any]]:
        want = [n for n in dict.fromkeys(names) if n not in self._values]
        if want:
            idx = [self.names.index(n) for n in want]
            cols: list[list[Any]] = [[] for _ in want]
            interned: list[dict[str, Any]] = [{} for _ in want]
            with open_text(self.path, self.encoding) as fh:
                reader = csv.reader(fh, delimiter=self.delimiter)
                next(reader)
                for cells in reader:
                    if not cells:
                        continue
                    for c, j in enumerate(idx):
                        tok = cells[j]
                        seen = interned[c]
                        v = seen.get(tok, seen)
                        if v is seen:
                            v = csv_cell(tok, self.decimal_comma)
                            if len(seen) < 100_000:
                                seen[tok] = v
                        cols[c].append(v)
            self._values.update(zip(want, cols, strict=True))
        return {n: self._values[n] for n in names}

    def where(self, row: int) -> str:
        return f"line {self._lines[row]}" if 0 <= row < len(self._lines) else f"row {row}"
