"""Tables from files and data frames, read column by column.

A :class:`Table` is what every source becomes: CSV, Parquet and JSONL files, pandas
and polars data frames, pyarrow tables, plain records. It gives, per column, counts of
what its values are (:class:`ColumnStats`: numbers, booleans, strings, times,
missing), the numbers as a float64 array, and the values as plain Python values
(:func:`driftline.contract.values.plain`), so one set of rules
(:mod:`driftline.offline.roles`) decides every column's role and type whatever the
source, and booleans read the same from all of them.

CSV has no types, so its cells are read as text: empty, ``NA``, ``NaN``, ``null``,
``None`` (and the like) are missing; ``True``/``False`` in any case are booleans;
what ``float()`` reads is a number; the rest is a string. A CSV file is read twice
(numbers on the first pass, the text of the columns that need it on the second), so
half a million rows of twenty columns stay well under a gigabyte.

pandas, polars and pyarrow are optional and imported only when such an object (or a
Parquet or Feather file) is given. Files named ``.gz``, ``.bz2`` or ``.xz`` after their
type (``train.csv.gz``, what pandas writes for that name) are read through the standard
library's decompressors; ``.tsv`` files are CSV with tabs. A ``.csv`` file is separated
by what splits its header line into the most fields: where the comma is the decimal
mark, spreadsheets and ``to_csv(sep=";", decimal=",")`` write semicolons, and such a
file's numbers may have a decimal comma. A ``.json`` file is any layout of pandas'
``to_json`` that names its columns, or JSON lines.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
import math
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
from numpy.typing import NDArray

from driftline.contract.values import plain
from driftline.errors import InputError

__all__ = [
    "BOOL_TOKENS",
    "MISSING_TOKENS",
    "ColumnStats",
    "Table",
    "read_table",
    "table_from",
]

#: CSV cells read as missing values (what pandas, R and spreadsheets write for them).
MISSING_TOKENS = frozenset(
    {
        "",
        "NA",
        "N/A",
        "n/a",
        "#N/A",
        "NaN",
        "nan",
        "NAN",
        "null",
        "NULL",
        "Null",
        "None",
        "none",
        "<NA>",
        "NaT",
    }
)
#: CSV cells read as booleans: pandas writes ``True``/``False``, JSON ``true``/``false``.
BOOL_TOKENS = {"true": True, "false": False}
_DISTINCT_CAP = 64
#: Rows between progress lines on a terminal (a multiple of the chunk).
_PROGRESS_ROWS = 98_304
#: CSV rows read and typed together.
_CHUNK_ROWS = 8192


@dataclass
class ColumnStats:
    """What a column's values are: counts by kind, the first of some, a few distinct."""

    rows: int = 0
    missing: int = 0
    numbers: int = 0
    integers: int = 0
    bools: int = 0
    strings: int = 0
    times: int = 0
    #: (row, value) of the first present value that is not a number.
    first_non_number: tuple[int, Any] | None = None
    #: Up to 64 distinct present values (as text), to tell codes from measurements.
    distinct: set[str] = field(default_factory=set)

    @property
    def present(self) -> int:
        """Values that are not missing."""
        return self.rows - self.missing

    def see(self, row: int, v: Any) -> None:
        """Count one plain value, at ``row``."""
        if (
            self.first_non_number is None
            and v is not None
            and type(v) is not int
            and type(v) is not float
        ):
            self.first_non_number = (row, v)
        self.see_many(v, 1)

    def see_many(self, v: Any, n: int) -> None:
        """Count ``n`` occurrences of one plain value."""
        self.rows += n
        if v is None:
            self.missing += n
            return
        t = type(v)
        if t is bool:
            self.bools += n
        elif t is int or t is float:
            self.numbers += n
            if t is int or v.is_integer():
                self.integers += n
        elif isinstance(v, datetime):
            self.times += n
        else:
            self.strings += n
        if len(self.distinct) < _DISTINCT_CAP:
            self.distinct.add(repr(v) if t is int or t is float else str(v))


class Table:
    """Columns of one source. Subclasses say where a row came from (:meth:`where`)."""

    source: str
    names: list[str]
    n_rows: int

    def stats(self, name: str) -> ColumnStats:
        """Counts of the column's values by kind."""
        raise NotImplementedError

    def floats(self, name: str) -> NDArray[np.float64]:
        """The column's numbers as float64; NaN where missing or not a number."""
        raise NotImplementedError

    def non_numbers(self, name: str) -> NDArray[np.bool_]:
        """Rows whose value is present but not a number (booleans included)."""
        raise NotImplementedError

    def values(self, names: Sequence[str]) -> dict[str, list[Any]]:
        """The columns as plain Python values (``None``, bool, int, float, str, datetime)."""
        raise NotImplementedError

    def where(self, row: int) -> str:
        """Where row ``row`` (0-based) came from, for messages: ``line 12`` or ``row 11``."""
        return f"row {row}"


def _progress(source: str) -> Callable[[int, bool], None]:
    """Progress lines on stderr while reading, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        return lambda rows, done: None
    t0 = time.monotonic()

    def show(rows: int, done: bool) -> None:
        end = "\n" if done else "\r"
        rate = rows / max(time.monotonic() - t0, 1e-6)
        print(
            f"driftline: reading {source}: {rows:,} rows ({rate:,.0f}/s)",
            end=end,
            file=sys.stderr,
            flush=True,
        )

    return show


# --------------------------------------------------------------------------- CSV


def csv_cell(tok: str, decimal_comma: bool = False) -> Any:
    """The plain value of one CSV cell (see the module docstring); with
    ``decimal_comma``, ``1,5`` is the number 1.5 (a file separated by semicolons)."""
    if tok in MISSING_TOKENS:
        return None
    b = BOOL_TOKENS.get(tok.lower()) if len(tok) in (4, 5) else None
    if b is not None:
        return b
    try:
        f = _float_comma(tok) if decimal_comma else float(tok)
    except ValueError:
        return tok
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


#: Separators a ``.csv`` file may use, by preference when its header splits alike.
_SEPARATORS = (",", ";", "\t", "|")


def sniff_separator(path: Path) -> str:
    """The separator of a ``.csv`` file: the one that splits its header line into the
    most fields (a comma when none splits it). Spreadsheets where the comma is the
    decimal mark write semicolons (``to_csv(sep=";", decimal=",")``)."""
    with _open_text(path) as fh:
        try:
            header = fh.readline()
        except _UNREADABLE as exc:
            raise _unreadable(path, 0, exc) from None
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

    def __init__(self, path: Path, delimiter: str = ",") -> None:
        self.path = path
        self.source = path.name
        self.delimiter = delimiter
        #: Semicolons separate the fields where the comma is the decimal mark.
        self.decimal_comma = delimiter == ";"
        with _open_text(path) as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            try:
                header = next(reader)
            except StopIteration:
                raise InputError(f"{path}: empty file (no header line)") from None
            except csv.Error as exc:
                raise InputError(f"{path}, line 1: {exc}") from None
            except _UNREADABLE as exc:
                raise _unreadable(path, 0, exc) from None
            # pandas reads a column without a name (the index ``to_csv`` writes by
            # default) as ``Unnamed: <position>``: the same name here, so the roles
            # table can say what it is.
            self.names = [h.strip() or f"Unnamed: {i}" for i, h in enumerate(header)]
            _check_names(self.names, path.name)
            k = len(self.names)
            self._chunks: list[list[NDArray[np.float64]]] = [[] for _ in range(k)]
            self._odd_chunks: list[list[NDArray[np.bool_]]] = [[] for _ in range(k)]
            stats = [ColumnStats() for _ in range(k)]
            texts: list[list[Any] | None] = [None] * k
            numeric = [True] * k
            lines = array("q")
            show = _progress(path.name)
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
                    if len(chunk) == _CHUNK_ROWS:
                        self._read_chunk(chunk, row, stats, texts, numeric)
                        row += len(chunk)
                        chunk = []
                        if row % _PROGRESS_ROWS == 0:
                            show(row, False)
            except csv.Error as exc:
                raise InputError(f"{path}, line {reader.line_num}: {exc}") from None
            except _UNREADABLE as exc:
                raise _unreadable(path, reader.line_num, exc) from None
            if chunk:
                self._read_chunk(chunk, row, stats, texts, numeric)
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

    def _read_chunk(
        self,
        chunk: list[list[str]],
        row0: int,
        stats: list[ColumnStats],
        texts: list[list[Any] | None],
        numeric: list[bool],
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
                    continue
            if texts[j] is None:  # the column turned out not to be numbers: keep its text
                texts[j] = [] if row0 == 0 else None
            self._mixed(j, toks, row0, st, texts[j])

    def _numbers(self, j: int, arr: NDArray[np.float64], st: ColumnStats) -> None:
        nan = np.isnan(arr)
        n_missing = int(nan.sum())
        st.rows += arr.size
        st.missing += n_missing
        st.numbers += arr.size - n_missing
        ok = arr[~nan]
        whole = ok == np.floor(ok)
        st.integers += int(whole.sum())
        if len(st.distinct) < _DISTINCT_CAP:
            for v in np.unique(ok)[:_DISTINCT_CAP].tolist():
                st.distinct.add(repr(int(v)) if v.is_integer() else repr(v))
        self._chunks[j].append(arr)
        self._odd_chunks[j].append(np.zeros(arr.size, np.bool_))

    def _mixed(
        self, j: int, toks: Sequence[str], row0: int, st: ColumnStats, keep: list[Any] | None
    ) -> None:
        counts = Counter(toks)
        seen = {tok: csv_cell(tok, self.decimal_comma) for tok in counts}
        vals = [seen[t] for t in toks]
        first = None
        for tok, n in counts.items():
            v = seen[tok]
            st.see_many(v, n)
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
            with _open_text(self.path) as fh:
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


#: Compressions pandas infers from a file's name (``to_csv("train.csv.gz")``).
_DECOMPRESSORS: dict[str, Callable[..., Any]] = {
    ".gz": gzip.open,
    ".bz2": bz2.open,
    ".xz": lzma.open,
}
#: What reading a file that is not UTF-8 text, or not the compression its name says,
#: raises (gzip.BadGzipFile is an OSError; a truncated stream an EOFError).
_UNREADABLE = (UnicodeDecodeError, OSError, EOFError, lzma.LZMAError)


def file_type(path: Path) -> tuple[str, str]:
    """``(type suffix, compression suffix or "")`` of a file name, lower case:
    ``train.csv.gz`` -> ``(".csv", ".gz")``."""
    parts = [p.lower() for p in path.suffixes]
    if parts and parts[-1] in _DECOMPRESSORS:
        return (parts[-2] if len(parts) > 1 else ""), parts[-1]
    return (parts[-1] if parts else ""), ""


def open_binary(path: Path) -> IO[bytes]:
    """A file's bytes, decompressed when its name ends in ``.gz``, ``.bz2`` or ``.xz``."""
    opener = _DECOMPRESSORS.get(file_type(path)[1])
    try:
        fh: IO[bytes] = opener(path, "rb") if opener is not None else path.open("rb")
        return fh
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None


def _open_text(path: Path) -> Any:
    return io.TextIOWrapper(open_binary(path), encoding="utf-8-sig", newline="")


def _unreadable(path: Path, after_line: int, exc: BaseException) -> InputError:
    """The one line for a file that cannot be read as what its name says."""
    where = f"{path}, after line {after_line}" if after_line else str(path)
    if isinstance(exc, UnicodeDecodeError):
        return InputError(
            f"{where}: not UTF-8 text (byte {exc.object[exc.start]:#04x}); save it as "
            "UTF-8 (pandas: to_csv(..., encoding='utf-8'))"
        )
    comp = file_type(path)[1]
    what = f"a {comp[1:]} file" if comp else "readable"
    return InputError(f"{where}: not {what} ({type(exc).__name__}: {exc or 'truncated'})")


def _check_names(names: Sequence[str], source: str) -> None:
    seen: set[str] = set()
    for i, n in enumerate(names):
        if not n:
            raise InputError(f"{source}: column {i + 1} has no name in the header")
        if n in seen:
            raise InputError(f"{source}: column {n!r} appears twice in the header")
        seen.add(n)


# --------------------------------------------------------------------------- in memory


class ValueTable(Table):
    """Columns held in memory: float64 arrays (numbers) or lists of plain values."""

    def __init__(
        self,
        source: str,
        columns: Mapping[str, NDArray[np.float64] | list[Any]],
        *,
        integer_columns: Iterable[str] = (),
        exact: Mapping[str, NDArray[np.int64]] | None = None,
        lines: Sequence[int] | None = None,
    ) -> None:
        self.source = source
        self.names = list(columns)
        _check_names(self.names, source)
        self._cols = dict(columns)
        self._ints = set(integer_columns)
        #: Integer columns as int64 (missing values as 0; the float column says which):
        #: a float64 holds integers exactly only up to 2**53, and an id of 63 bits
        #: (hashed, snowflake-like) must not become its neighbour's.
        self._exact = dict(exact or {})
        lengths = {len(c) for c in self._cols.values()}
        if len(lengths) > 1:
            raise InputError(f"{source}: columns have different lengths {sorted(lengths)}")
        self.n_rows = lengths.pop() if lengths else 0
        self._lines = lines
        self._stats: dict[str, ColumnStats] = {}

    def stats(self, name: str) -> ColumnStats:
        st = self._stats.get(name)
        if st is None:
            col = self._cols[name]
            st = ColumnStats()
            if isinstance(col, np.ndarray):
                nan = np.isnan(col)
                st.rows = col.size
                st.missing = int(nan.sum())
                st.numbers = st.rows - st.missing
                ok = col[~nan]
                st.integers = int((ok == np.floor(ok)).sum())
                for v in np.unique(ok[:10_000])[:_DISTINCT_CAP]:
                    st.distinct.add(repr(int(v) if name in self._ints else float(v)))
            else:
                for i, v in enumerate(col):
                    st.see(i, v)
            self._stats[name] = st
        return st

    def floats(self, name: str) -> NDArray[np.float64]:
        col = self._cols[name]
        if isinstance(col, np.ndarray):
            return col
        return np.fromiter(
            (v if type(v) is float or type(v) is int else math.nan for v in col),
            np.float64,
            count=len(col),
        )

    def non_numbers(self, name: str) -> NDArray[np.bool_]:
        col = self._cols[name]
        if isinstance(col, np.ndarray):
            return np.zeros(col.size, np.bool_)
        return np.fromiter(
            (v is not None and type(v) is not float and type(v) is not int for v in col),
            np.bool_,
            count=len(col),
        )

    def values(self, names: Sequence[str]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for n in names:
            col = self._cols[n]
            if isinstance(col, np.ndarray):
                nan = np.isnan(col)
                exact = self._exact.get(n)
                vals: list[Any] = (
                    exact.tolist()
                    if exact is not None
                    else col.astype(np.int64).tolist()
                    if n in self._ints and not nan.any()
                    else col.tolist()
                )
                if nan.any():
                    for i in np.flatnonzero(nan).tolist():
                        vals[i] = None
                    if n in self._ints:
                        vals = [v if v is None else int(v) for v in vals]
                out[n] = vals
            else:
                out[n] = col
        return out

    def where(self, row: int) -> str:
        if self._lines is not None and 0 <= row < len(self._lines):
            return f"line {self._lines[row]}"
        return f"row {row}"


def _plain_list(values: Iterable[Any]) -> list[Any]:
    return [plain(v) for v in values]


def _records(source: str, rows: Sequence[Mapping[str, Any]], lines: Any = None) -> ValueTable:
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r))
    cols = {str(n): _plain_list(r.get(n) for r in rows) for n in names}
    return ValueTable(source, cols, lines=lines)


def _from_pandas(df: Any, source: str) -> ValueTable:
    import pandas as pd

    api = pd.api.types
    cols: dict[str, Any] = {}
    ints: list[str] = []
    exact: dict[str, NDArray[np.int64]] = {}
    for name in df.columns:
        s = df[name]
        dt = s.dtype
        key = str(name)
        if api.is_bool_dtype(dt) or (api.is_unsigned_integer_dtype(dt) and dt.itemsize == 8):
            cols[key] = _plain_list(s.tolist())  # (uint64: past int64's range)
        elif api.is_numeric_dtype(dt):
            cols[key] = s.to_numpy(dtype=np.float64, na_value=np.nan)
            if api.is_integer_dtype(dt):
                ints.append(key)
                exact[key] = s.to_numpy(dtype=np.int64, na_value=0)
        else:
            cols[key] = _plain_list(s.tolist())
    return ValueTable(source, cols, integer_columns=ints, exact=exact)


def _from_arrow(table: Any, source: str) -> ValueTable:
    import pyarrow as pa

    cols: dict[str, Any] = {}
    ints: list[str] = []
    exact: dict[str, NDArray[np.int64]] = {}
    for name in table.column_names:
        col = table.column(name)
        t = col.type
        key = str(name)
        if pa.types.is_integer(t) and t != pa.uint64():
            # Arrow refuses an integer past 2**53 as a float; numpy rounds it (a
            # feature's value), and the exact integers are kept for ids.
            ints_ = col.cast(pa.int64()).fill_null(0).to_numpy()
            missing = col.is_null().to_numpy(zero_copy_only=False)
            floats = ints_.astype(np.float64)
            floats[missing] = np.nan
            cols[key] = floats
            ints.append(key)
            exact[key] = ints_
        elif pa.types.is_floating(t) or pa.types.is_decimal(t):
            arr = col.cast(pa.float64()).to_numpy()
            cols[key] = np.asarray(arr, dtype=np.float64)
        else:
            cols[key] = _plain_list(col.to_pylist())
    return ValueTable(source, cols, integer_columns=ints, exact=exact)


def _read_arrow_file(path: Path, kind: str) -> ValueTable:
    """A Parquet or Feather (Arrow IPC) file, through pyarrow."""
    what = "Parquet" if kind == "parquet" else "Feather (Arrow)"
    try:
        if kind == "parquet":
            from pyarrow.parquet import read_table as read
        else:
            from pyarrow.feather import read_table as read
    except ImportError:
        raise InputError(
            f"{path}: reading {what} needs pyarrow (pip install 'driftline[parquet]')"
        ) from None
    try:
        table = read(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise InputError(f"{path}: not a readable {what} file ({exc})") from None
    return _from_arrow(table, path.name)


def read_events(path: Path) -> Generator[tuple[int, bytes], None, None]:
    """``(line number, bytes)`` for each non-empty line of a JSONL file."""
    i = 0
    with open_binary(path) as fh:
        try:
            for i, line in enumerate(fh, 1):
                if line.strip():
                    yield i, line.rstrip(b"\r\n")
        except _UNREADABLE as exc:
            raise _unreadable(path, i, exc) from None


def read_jsonl_objects(path: Path) -> Generator[tuple[int, Any], None, None]:
    """``(line number, parsed JSON)`` for each non-empty line; a bad line is an InputError."""
    for i, line in read_events(path):
        try:
            yield i, orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{path}, line {i}: not JSON ({exc})") from None


def flatten_event(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A prediction event (nested ``features`` and ``scores``) as one flat row.

    The row has ``prediction_id``, ``timestamp``, the features, ``prediction``,
    ``score.<class>`` columns and ``label`` when the line carries one.
    """
    row: dict[str, Any] = {
        "prediction_id": obj.get("prediction_id"),
        "timestamp": obj.get("timestamp"),
    }
    row.update(obj["features"])
    row["prediction"] = obj.get("prediction")
    for cls, p in (obj.get("scores") or {}).items():
        row[f"score.{cls}"] = p
    if "label" in obj:
        row["label"] = obj["label"]
    return row


def _read_jsonl(path: Path) -> ValueTable:
    rows: list[Mapping[str, Any]] = []
    lines: list[int] = []
    for i, obj in read_jsonl_objects(path):
        if not isinstance(obj, dict):
            raise InputError(f"{path}, line {i}: expected a JSON object per line")
        rows.append(flatten_event(obj) if isinstance(obj.get("features"), dict) else obj)
        lines.append(i)
    return _records(path.name, rows, lines)


def _read_json(path: Path) -> ValueTable:
    """A ``.json`` file as pandas writes one: ``to_json`` in any of its layouts, or
    JSON lines (``lines=True``), which are read as a ``.jsonl`` file."""
    if json_lines(path):
        return _read_jsonl(path)
    try:
        with open_binary(path) as fh:
            doc = orjson.loads(fh.read())
    except _UNREADABLE as exc:
        raise _unreadable(path, 0, exc) from None
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path}: not JSON ({exc})") from None
    rows: Any = None
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        if isinstance(doc.get("columns"), list):  # orient="split"
            names = [str(c) for c in doc["columns"]]
            if all(isinstance(r, list) and len(r) == len(names) for r in doc["data"]):
                cols = zip(*doc["data"], strict=True) if doc["data"] else [[]] * len(names)
                return ValueTable(
                    path.name, {n: _plain_list(c) for n, c in zip(names, cols, strict=True)}
                )
        elif isinstance(doc.get("schema"), dict):  # orient="table"
            rows = doc["data"]
    elif isinstance(doc, dict) and doc and all(isinstance(v, dict) for v in doc.values()):
        outer = list(doc)
        inner = list(next(iter(doc.values())))
        if _index_like(outer) and not _index_like(inner):  # orient="index": rows by index
            rows = list(doc.values())
        else:  # orient="columns", pandas' default: {column: {index: value}}
            return ValueTable(
                path.name,
                {str(n): _plain_list(map(col.get, inner)) for n, col in doc.items()},
            )
    elif isinstance(doc, dict) and doc and all(isinstance(v, list) for v in doc.values()):
        return ValueTable(path.name, {str(n): _plain_list(v) for n, v in doc.items()})
    elif isinstance(doc, list):  # orient="records"
        rows = doc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InputError(
            f"{path}: expected rows with column names: a list of objects (pandas: "
            "to_json(orient='records')), JSON lines, or another to_json layout with "
            "its column names ('columns', 'index', 'split', 'table')"
        )
    return _records(
        path.name,
        [flatten_event(r) if isinstance(r.get("features"), dict) else r for r in rows],
    )


def _index_like(keys: Sequence[str]) -> bool:
    """Whether names are a default row index (``"0"``, ``"1"``, ...)."""
    return all(k.isdigit() for k in keys[:100])


def json_lines(path: Path) -> bool:
    """Whether a ``.json`` file holds JSON lines: its first line is a whole object,
    and a second line follows or the object is a row (not one of ``to_json``'s
    layouts, which pandas writes on one line)."""
    first: Any = None
    with open_binary(path) as fh:
        try:
            for line in fh:
                if not line.strip():
                    continue
                if first is not None:
                    return True  # a second object's line
                try:
                    first = orjson.loads(line)
                except orjson.JSONDecodeError:
                    return False  # a document over several lines
                if not isinstance(first, dict):
                    return False
        except _UNREADABLE as exc:
            raise _unreadable(path, 0, exc) from None
    return first is not None and not _json_layout(first)


def _json_layout(doc: dict[str, Any]) -> bool:
    """Whether an object is a table in one of ``to_json``'s layouts, not one row."""
    values = list(doc.values())
    return bool(values) and (
        all(isinstance(v, dict) for v in values)
        or all(isinstance(v, list) for v in values)
        or (isinstance(doc.get("data"), list) and ("columns" in doc or "schema" in doc))
    )


#: Readers by file suffix.
FILE_KINDS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".feather": "feather",
    ".arrow": "feather",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".tsv": "tsv",
    ".tab": "tsv",
}
_EXCEL = (
    "an Excel workbook: save the sheet as CSV, or in pandas "
    "pd.read_excel(path).to_parquet('data.parquet')"
)
_PICKLE = (
    "a pickle, which Driftline never loads (unpickling runs code from the file); "
    "from a file you trust, in pandas: pd.read_pickle(path).to_parquet('data.parquet')"
)
#: Files that are not read, and what to do instead.
NOT_READ = {".xlsx": _EXCEL, ".xls": _EXCEL, ".pkl": _PICKLE, ".pickle": _PICKLE}


def read_table(path: Path) -> Table:
    """Read a CSV (or TSV; a ``.csv`` file may be separated by semicolons, with decimal
    commas), Parquet, Feather, JSON (pandas' ``to_json`` layouts) or JSONL (one flat
    object per line) file; text files may be compressed (``.gz``, ``.bz2``, ``.xz``
    after the type).

    Raises
    ------
    InputError
        Missing or unreadable file, an unknown suffix, a malformed line.
    """
    suffix, comp = file_type(path)
    kind = FILE_KINDS.get(suffix)
    if suffix in NOT_READ:
        raise InputError(f"{path}: {NOT_READ[suffix]}")
    if kind is None:
        raise InputError(
            f"{path}: unknown file type {suffix + comp or '(none)'}; expected .csv, .tsv, "
            ".parquet, .feather, .json or .jsonl (text files may end in .gz, .bz2 or .xz)"
        )
    if kind == "csv":
        return CsvTable(path, sniff_separator(path))
    if kind == "tsv":
        return CsvTable(path, "\t")
    if kind in ("parquet", "feather"):
        if comp:
            name = "Parquet" if kind == "parquet" else "Feather"
            raise InputError(f"{path}: {name} compresses inside; give the {suffix} file")
        return _read_arrow_file(path, kind)
    if kind == "json":
        return _read_json(path)
    return _read_jsonl(path)


def table_from(data: Any, source: str = "") -> Table:
    """A :class:`Table` from a data frame, a pyarrow table, records, or a file path.

    Accepts a pandas or polars ``DataFrame``, a ``pyarrow.Table`` or ``RecordBatch``,
    a sequence of mappings (rows), a mapping of column name to values, or a path.

    Raises
    ------
    InputError
        Something else, or columns of different lengths.
    """
    if isinstance(data, Table):
        return data
    if isinstance(data, str | Path):
        return read_table(Path(data))
    module = type(data).__module__.split(".")[0]
    if module == "pandas" and hasattr(data, "columns"):
        return _from_pandas(data, source or "DataFrame")
    if module == "polars" and hasattr(data, "columns"):
        cols = data.to_dict(as_series=False)
        return ValueTable(source or "DataFrame", {str(k): _plain_list(v) for k, v in cols.items()})
    if module == "pyarrow" and hasattr(data, "column_names"):
        if not hasattr(data, "column"):  # a RecordBatch: make it a table
            import pyarrow as pa

            data = pa.Table.from_batches([data])
        return _from_arrow(data, source or "pyarrow table")
    if isinstance(data, Mapping):
        return ValueTable(source or "columns", {str(k): _plain_list(v) for k, v in data.items()})
    if isinstance(data, Sequence) and all(isinstance(r, Mapping) for r in data):
        return _records(source or "records", data)
    raise InputError(
        f"cannot read a {type(data).__name__} as a table: give a pandas or polars DataFrame, "
        "a pyarrow Table, a list of dicts, a dict of columns, or a file path"
    )
