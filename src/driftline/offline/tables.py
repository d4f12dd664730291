"""Tables from files and data frames, read column by column.

A :class:`Table` is what every source becomes: CSV, Parquet and JSONL files, pandas
and polars data frames, pyarrow tables, plain records. It gives, per column, counts of
what its values are (:class:`ColumnStats`: numbers, booleans, strings, times,
missing), the numbers as a float64 array, and the values as plain Python values
(:func:`driftline.contract.values.plain`), so one set of rules
(:mod:`driftline.offline.roles`) decides every column's role and type whatever the
source, and booleans read the same from all of them.

CSV files are read by :mod:`driftline.offline.csv_table`.

pandas, polars and pyarrow are optional and imported only when such an object (or a
Parquet or Feather file) is given. Files named ``.gz``, ``.bz2`` or ``.xz`` after their
type (``train.csv.gz``, what pandas writes for that name) are read through the standard
library's decompressors; ``.tsv`` files are CSV with tabs. A ``.json`` file is any
layout of pandas' ``to_json`` that names its columns, or JSON lines.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Generator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from driftline.contract.values import plain
from driftline.errors import InputError
from driftline.offline.csv_table import CsvTable, sniff_separator
from driftline.offline.options import option
from driftline.offline.table_base import (
    DISTINCT_CAP,
    UNREADABLE,
    ColumnStats,
    Table,
    check_names,
    file_type,
    open_binary,
    text_encoding,
    unreadable,
)

__all__ = [
    "FILE_KINDS",
    "ConcatTable",
    "ValueTable",
    "file_paths",
    "flatten_event",
    "json_lines",
    "read_events",
    "read_tables",
    "read_jsonl_objects",
    "read_table",
    "table_from",
]


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
        categories: Iterable[str] = (),
    ) -> None:
        self.source = source
        self.categories = frozenset(categories)
        self.names = list(columns)
        check_names(self.names, source)
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
                for v in np.unique(ok[:10_000])[:DISTINCT_CAP]:
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


def _index_as_columns(df: Any) -> Any:
    """``df`` with the data its index holds as columns, as ``reset_index`` gives them.

    ``set_index("id")`` or ``read_csv(..., index_col="timestamp")`` leave ids or times
    in the index, where they are data: a named index level becomes a column of its name,
    and an unnamed index of date-times the ``timestamp`` column. An unnamed index of
    anything else is row numbers (a ``RangeIndex``, or what filtering left of one) and
    is not read.
    """
    import pandas as pd

    idx = df.index
    named = [n for n in idx.names if n is not None and n not in df.columns]
    if named:
        return df.reset_index(level=named)
    if (
        idx.nlevels == 1
        and idx.name is None
        and pd.api.types.is_datetime64_any_dtype(idx.dtype)
        and "timestamp" not in df.columns
    ):
        return df.reset_index(names="timestamp")
    return df


def _from_pandas(df: Any, source: str) -> ValueTable:
    import pandas as pd

    api = pd.api.types
    df = _index_as_columns(df)
    cols: dict[str, Any] = {}
    ints: list[str] = []
    exact: dict[str, NDArray[np.int64]] = {}
    categories = [str(n) for n in df.columns if isinstance(df[n].dtype, pd.CategoricalDtype)]
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
    return ValueTable(source, cols, integer_columns=ints, exact=exact, categories=categories)


def _from_arrow(table: Any, source: str) -> ValueTable:
    import pyarrow as pa

    cols: dict[str, Any] = {}
    ints: list[str] = []
    exact: dict[str, NDArray[np.int64]] = {}
    categories = [n for n in table.column_names if pa.types.is_dictionary(table.column(n).type)]
    # pyarrow reads a pandas category of numbers back from Parquet as the numbers; the
    # pandas metadata still says what it was
    meta = (table.schema.pandas_metadata or {}).get("columns", [])
    categories += [c["field_name"] for c in meta if c.get("pandas_type") == "categorical"]
    for name in table.column_names:
        col = table.column(name)
        t = col.type
        key = str(name)
        if pa.types.is_decimal(t) and t.scale == 0:
            # SQL NUMERIC(p, 0) ids and counts: integers, exact when int64 holds them
            with contextlib.suppress(ValueError):  # pyarrow.ArrowInvalid: past int64
                col, t = col.cast(pa.int64()), pa.int64()
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
    return ValueTable(source, cols, integer_columns=ints, exact=exact, categories=categories)


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
        except UNREADABLE as exc:
            raise unreadable(path, i, exc) from None


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
    except UNREADABLE as exc:
        raise unreadable(path, 0, exc) from None
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
        except UNREADABLE as exc:
            raise unreadable(path, 0, exc) from None
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


def read_table(path: Path, encoding: str | None = None) -> Table:
    """Read a CSV (or TSV; a ``.csv`` file may be separated by semicolons, with decimal
    commas), Parquet, Feather, JSON (pandas' ``to_json`` layouts) or JSONL (one flat
    object per line) file; text files may be compressed (``.gz``, ``.bz2``, ``.xz``
    after the type). ``encoding``: a CSV or TSV file's text encoding (default UTF-8;
    ``cp1252`` is what Excel writes for "CSV" on Windows).

    Raises
    ------
    InputError
        Missing or unreadable file, an unknown suffix, a malformed line, an encoding
        given for a file that has no choice of one.
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
    if kind in ("csv", "tsv"):
        sep = sniff_separator(path, encoding) if kind == "csv" else "\t"
        return CsvTable(path, sep, encoding)
    if text_encoding(encoding) != "utf-8-sig":
        # JSON is UTF-8 (RFC 8259) and Parquet and Feather say their own encoding:
        # reading them otherwise would read other characters than the file holds
        raise InputError(
            f"{path}: {option('encoding', str(encoding))} is for CSV and TSV files; "
            f"a {suffix} file is read as it says"
        )
    if kind in ("parquet", "feather"):
        if comp:
            name = "Parquet" if kind == "parquet" else "Feather"
            raise InputError(f"{path}: {name} compresses inside; give the {suffix} file")
        return _read_arrow_file(path, kind)
    if kind == "json":
        return _read_json(path)
    return _read_jsonl(path)


class ConcatTable(Table):
    """Tables with the same columns one after another: the files of one export (a file
    a day, say), read as one table. A row's place names its file."""

    def __init__(self, parts: Sequence[Table]) -> None:
        first = parts[0]
        for t in parts[1:]:
            if set(t.names) != set(first.names):
                missing = [n for n in first.names if n not in t.names]
                extra = [n for n in t.names if n not in first.names]
                raise InputError(
                    f"{t.source}: its columns are not {first.source}'s "
                    f"(missing {missing}, more {extra}): files read as one table share "
                    "their columns"
                )
        self.parts = list(parts)
        self.names = list(first.names)
        self.categories = frozenset().union(*(t.categories for t in parts))
        self.source = f"{first.source} and {len(parts) - 1} more"
        self.n_rows = sum(t.n_rows for t in parts)
        self._starts = np.cumsum([0, *(t.n_rows for t in parts)])
        self._stats: dict[str, ColumnStats] = {}
        # A code with leading zeros in one file (01234) is text in every file: 90210 in
        # another is the code '90210' too.
        self.text_codes: dict[str, str] = {}
        for t in parts:
            for n, code in t.text_codes.items():
                self.text_codes.setdefault(n, code)
        self.as_text(list(self.text_codes))

    def as_text(self, names: Sequence[str]) -> bool:
        done = all([t.as_text(names) for t in self.parts])
        for n in names:
            self._stats.pop(n, None)
        return done

    def as_numbers(self, name: str) -> None:
        for t in self.parts:
            t.as_numbers(name)
        self.text_codes.pop(name, None)
        self._stats.pop(name, None)

    def stats(self, name: str) -> ColumnStats:
        st = self._stats.get(name)
        if st is None:
            st = ColumnStats()
            for start, t in zip(self._starts.tolist(), self.parts, strict=False):
                part = t.stats(name)
                for f in ("rows", "missing", "numbers", "integers", "bools", "strings", "times"):
                    setattr(st, f, getattr(st, f) + getattr(part, f))
                st.grouped = st.grouped or part.grouped
                if st.first_non_number is None and part.first_non_number is not None:
                    row, v = part.first_non_number
                    st.first_non_number = (start + row, v)
                for d in part.distinct:
                    if len(st.distinct) >= DISTINCT_CAP:
                        break
                    st.distinct.add(d)
            self._stats[name] = st
        return st

    def floats(self, name: str) -> NDArray[np.float64]:
        return np.concatenate([t.floats(name) for t in self.parts])

    def non_numbers(self, name: str) -> NDArray[np.bool_]:
        return np.concatenate([t.non_numbers(name) for t in self.parts])

    def values(self, names: Sequence[str]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {n: [] for n in names}
        for t in self.parts:
            for n, vals in t.values(names).items():
                out[n].extend(vals)
        return out

    def where(self, row: int) -> str:
        i = int(np.searchsorted(self._starts, row, side="right")) - 1
        if not 0 <= i < len(self.parts):
            return f"row {row}"
        t = self.parts[i]
        return f"{t.source} {t.where(row - int(self._starts[i]))}"


def file_paths(data: Any) -> list[Path]:
    """The file(s) ``data`` names: a path, or a list of paths; else none."""
    if isinstance(data, str | Path):
        return [Path(data)]
    if isinstance(data, list | tuple) and data and all(isinstance(x, str | Path) for x in data):
        return [Path(x) for x in data]
    return []


def read_tables(paths: Sequence[Path], encoding: str | None = None) -> Table:
    """One table of several files with the same columns (:class:`ConcatTable`), in the
    order given, or the table of one file.

    Raises
    ------
    InputError
        As :func:`read_table`, or files whose columns differ.
    """
    tables = [read_table(p, encoding) for p in paths]
    return tables[0] if len(tables) == 1 else ConcatTable(tables)


def table_from(data: Any, source: str = "", encoding: str | None = None) -> Table:
    """A :class:`Table` from a data frame, a pyarrow table, records, or a file path.

    Accepts a pandas or polars ``DataFrame``, a ``pyarrow.Table`` or ``RecordBatch``,
    a sequence of mappings (rows), a mapping of column name to values, a path, or a list
    of paths (the files of one export, read as one table: :class:`ConcatTable`), whose
    CSV text is in ``encoding`` (default UTF-8).

    Raises
    ------
    InputError
        Something else, or columns of different lengths.
    """
    if isinstance(data, Table):
        return data
    paths = file_paths(data)
    if paths:
        return read_tables(paths, encoding)
    module = type(data).__module__.split(".")[0]
    if module == "pandas" and hasattr(data, "columns"):
        return _from_pandas(data, source or "DataFrame")
    if module == "polars" and hasattr(data, "columns"):
        import polars as pl

        cols = data.to_dict(as_series=False)
        categories = [
            str(k) for k, t in data.schema.items() if isinstance(t, pl.Categorical | pl.Enum)
        ]
        return ValueTable(
            source or "DataFrame",
            {str(k): _plain_list(v) for k, v in cols.items()},
            categories=categories,
        )
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
