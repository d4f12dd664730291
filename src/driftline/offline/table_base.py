"""What every table is, and how a file is opened.

A :class:`Table` is what every source becomes (:mod:`driftline.offline.tables` reads
them): per column, counts of what its values are (:class:`ColumnStats`), the numbers as
float64 and the values as plain Python values. Files are opened here, decompressed by
their names (``train.csv.gz``) and read as UTF-8 (a byte order mark is skipped) or the
encoding the user gives (:func:`text_encoding`), and a file that is not what its name
says is one line (:func:`unreadable`).
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import lzma
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from driftline.errors import InputError
from driftline.offline.options import option

__all__ = [
    "BOOL_TOKENS",
    "MISSING_TOKENS",
    "ColumnStats",
    "Table",
    "check_names",
    "file_type",
    "open_binary",
    "open_text",
    "progress",
    "text_encoding",
    "unreadable",
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
DISTINCT_CAP = 64
#: Rows between progress lines on a terminal (a multiple of the chunk).
PROGRESS_ROWS = 98_304
#: CSV rows read and typed together.
CHUNK_ROWS = 8192


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
    #: The first number written with thousands separators (``82,614`` in a CSV), as
    #: written: the roles table says such a column was read as numbers.
    grouped: str | None = None
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
        if len(self.distinct) < DISTINCT_CAP:
            self.distinct.add(repr(v) if t is int or t is float else str(v))


class Table:
    """Columns of one source. Subclasses say where a row came from (:meth:`where`)."""

    source: str
    names: list[str]
    n_rows: int
    #: Columns the source types as categories (a pandas ``category``, an Arrow
    #: dictionary, a polars ``Categorical``/``Enum``): categorical features even when
    #: their categories are numbers (``pd.Categorical([1, 2, 5])``).
    categories: frozenset[str] = frozenset()
    #: Columns of numbers written with leading zeros (``01234``: a zip code, a product
    #: code), read as their text: codes, not numbers. Each with its first such value.
    text_codes: Mapping[str, str] = MappingProxyType({})

    def as_text(self, names: Sequence[str]) -> bool:
        """Read columns ``names`` as the text they are written in, where the source has
        text (a CSV file: ``01234`` stays ``01234``); False where it has none."""
        return False

    def as_numbers(self, name: str) -> None:
        """Read column ``name`` of :attr:`text_codes` as numbers again."""

    def stats(self, name: str) -> ColumnStats:
        """Counts of the column's values by kind."""
        raise NotImplementedError

    def floats(self, name: str) -> NDArray[np.float64]:
        """The column's numbers as float64; NaN where missing or not a number."""
        raise NotImplementedError

    def non_numbers(self, name: str) -> NDArray[np.bool_]:
        """Rows whose value is present but not a number (booleans included)."""
        raise NotImplementedError

    def lists(self, name: str) -> NDArray[np.float64] | None:
        """Column ``name`` as a ``(rows, k)`` matrix when every present value is a list
        of ``k >= 2`` numbers (missing rows NaN), else None: a model's probabilities
        saved as one list a row."""
        st = self.stats(name)
        first = st.first_non_number[1] if st.first_non_number else None
        if not isinstance(first, list | tuple | np.ndarray) or st.strings != st.present:
            return None
        vals = self.values([name])[name]
        width = len(first)
        out = np.full((len(vals), width), np.nan)
        for i, v in enumerate(vals):
            if v is None:
                continue
            if not isinstance(v, list | tuple | np.ndarray) or len(v) != width:
                return None
            try:
                out[i] = np.asarray(v, dtype=np.float64)
            except (TypeError, ValueError):
                return None
        return out if width >= 2 else None

    def values(self, names: Sequence[str]) -> dict[str, list[Any]]:
        """The columns as plain Python values (``None``, bool, int, float, str, datetime)."""
        raise NotImplementedError

    def where(self, row: int) -> str:
        """Where row ``row`` (0-based) came from, for messages: ``line 12`` or ``row 11``."""
        return f"row {row}"


def progress(source: str) -> Callable[[int, bool], None]:
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


#: Compressions pandas infers from a file's name (``to_csv("train.csv.gz")``).
_DECOMPRESSORS: dict[str, Callable[..., Any]] = {
    ".gz": gzip.open,
    ".bz2": bz2.open,
    ".xz": lzma.open,
}
#: What reading a file that is not UTF-8 text, or not the compression its name says,
#: raises (gzip.BadGzipFile is an OSError; a truncated stream an EOFError).
UNREADABLE = (UnicodeDecodeError, OSError, EOFError, lzma.LZMAError)


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


def text_encoding(name: str | None) -> str:
    """The codec that reads a text file: UTF-8 (skipping a byte order mark) unless
    ``name`` says another (``cp1252``: what Excel writes on Windows).

    Raises
    ------
    InputError
        A name Python does not know.
    """
    if not name:
        return "utf-8-sig"
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        raise InputError(
            f"{option('encoding', name)}: unknown encoding (e.g. cp1252 for an Excel export "
            "on Windows, latin-1, utf-16)"
        ) from None
    return "utf-8-sig" if codec == "utf-8" else codec


def open_text(path: Path, encoding: str | None = None) -> Any:
    """A text file's lines, decoded as :func:`text_encoding` says."""
    return io.TextIOWrapper(open_binary(path), encoding=text_encoding(encoding), newline="")


#: Where a byte that is not UTF-8 is most often from: a spreadsheet saved on Windows.
_LIKELY = "cp1252"


def _first_non_utf8(path: Path) -> tuple[int, int] | None:
    """The line number of the first byte of ``path`` that is not UTF-8, and the byte.
    A decoder reads blocks, so the line its error comes after may be well before."""
    try:
        with open_binary(path) as fh:
            for i, line in enumerate(fh, 1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    return i, line[exc.start]
    except UNREADABLE:
        return None
    return None


def unreadable(
    path: Path, after_line: int, exc: BaseException, encoding: str | None = None
) -> InputError:
    """The one line for a file that cannot be read as what its name says.

    A text file that is not UTF-8 is told the line of the first byte that is not, what
    that byte is in Windows-1252 (Excel's encoding for "CSV" on Windows), and both ways
    out: the file's encoding (a CSV or TSV file has the choice), or saving it as UTF-8.
    """
    where = f"{path}, after line {after_line}" if after_line else str(path)
    if isinstance(exc, UnicodeDecodeError):
        byte = exc.object[exc.start]
        if text_encoding(encoding) != "utf-8-sig":
            return InputError(
                f"{where}: not {encoding} text (byte {byte:#04x}); give the file's encoding "
                f"({option('encoding', 'NAME')}) or save it as UTF-8"
            )
        found = _first_non_utf8(path)
        if found is not None:
            where = f"{path}, line {found[0]}"
            byte = found[1]
        try:
            hint = f", {bytes([byte]).decode(_LIKELY)!r} in Windows-1252"
        except UnicodeDecodeError:  # one of the few bytes Windows-1252 leaves undefined
            hint = ""
        if file_type(path)[0] in (".csv", ".tsv"):
            return InputError(
                f"{where}: not UTF-8 text (byte {byte:#04x}{hint}); give the file's "
                f"encoding ({option('encoding', _LIKELY)} for an Excel 'CSV' saved on "
                "Windows) or save it as UTF-8 (Excel: 'CSV UTF-8'; pandas: "
                "to_csv(..., encoding='utf-8'))"
            )
        return InputError(
            f"{where}: not UTF-8 text (byte {byte:#04x}{hint}); a JSON file is UTF-8: "
            "save it as such (pandas' to_json writes UTF-8)"
        )
    comp = file_type(path)[1]
    what = f"a {comp[1:]} file" if comp else "readable"
    return InputError(f"{where}: not {what} ({type(exc).__name__}: {exc or 'truncated'})")


def check_names(names: Sequence[str], source: str) -> None:
    seen: set[str] = set()
    for i, n in enumerate(names):
        if not n:
            raise InputError(f"{source}: column {i + 1} has no name in the header")
        if n in seen:
            raise InputError(f"{source}: column {n!r} appears twice in the header")
        seen.add(n)
