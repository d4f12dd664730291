"""Sketch contracts: monoid laws, byte format and the per-kind conventions.

One contract suite runs over both sketch kinds through a small adapter (``Kind``): how
to make an empty sketch and a random batch, which fields must agree exactly and which
(the floating-point moments) within 1e-9 relative. A sketch's ``update`` is a bank of
one column, so the suite runs the code that updates the monitor's windows; the banks'
own laws (many columns at once, merge, the sketches in and out) and the bin lookup
they use follow at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.contract.codec import pack
from driftline.core.sketches import (
    CategoricalBins,
    CategoricalSketch,
    CategoricalSketchBank,
    GridBinner,
    NumericBins,
    NumericSketch,
    NumericSketchBank,
    categories_fingerprint,
    edges_fingerprint,
)
from driftline.errors import SketchMismatch, StateCorrupt

EDGES = np.array([-1.5, -0.5, 0.0, 0.5, 1.5])
EDGES.flags.writeable = False
OTHER_EDGES = np.array([-1.5, -0.5, 0.0, 0.5, 1.6])
REF_MIN, REF_MAX = -2.5, 2.5
CATS = ("red", "green", "blue")
OTHER_CATS = ("red", "blue", "green")

Sketch = Any  # NumericSketch | CategoricalSketch, each merged only with its own kind


def numeric_batch(rng: np.random.Generator, size: int) -> Any:
    x = rng.normal(0.0, 1.3, size)
    on_edge = rng.random(size) < 0.1  # values exactly on an edge test the bin convention
    x[on_edge] = rng.choice(EDGES, int(on_edge.sum()))
    x[rng.random(size) < 0.05] = np.nan
    x[rng.random(size) < 0.02] = np.inf
    x[rng.random(size) < 0.02] = -np.inf
    return x


def categorical_batch(rng: np.random.Generator, size: int) -> Any:
    pool: list[str | None] = ["red", "green", "blue", "purple", "orange", None]
    weights = np.array([0.4, 0.25, 0.15, 0.08, 0.07, 0.05])
    return [pool[i] for i in rng.choice(len(pool), size=size, p=weights)]


@dataclass(frozen=True)
class Kind:
    name: str
    cls: type[NumericSketch] | type[CategoricalSketch]
    zero: Callable[[], Sketch]
    other_zero: Callable[[], Sketch]  # same kind, other bins
    batch: Callable[[np.random.Generator, int], Any]
    concat: Callable[[Any, Any], Any]
    bins: Any  # what from_bytes needs
    other_bins: Any
    exact: Callable[[Any], tuple[Any, ...]]
    approx: Callable[[Any], tuple[float, ...]]

    def make(self, rng: np.random.Generator, size: int) -> Sketch:
        return self.zero().update(self.batch(rng, size))

    def from_bytes(self, data: bytes, bins: Any = None) -> Sketch:
        return self.cls.from_bytes(data, bins)


NUMERIC = Kind(
    name="numeric",
    cls=NumericSketch,
    zero=lambda: NumericSketch.zero(EDGES, REF_MIN, REF_MAX),
    other_zero=lambda: NumericSketch.zero(OTHER_EDGES, REF_MIN, REF_MAX),
    batch=numeric_batch,
    concat=lambda a, b: np.concatenate([a, b]),
    bins=EDGES,
    other_bins=OTHER_EDGES,
    exact=lambda s: (
        s.edges.tolist(),
        s.counts.tolist(),
        s.missing,
        s.nonfinite,
        s.n,
        s.below,
        s.above,
        s.min,
        s.max,
        s.ref_min,
        s.ref_max,
    ),  # fmt: skip
    approx=lambda s: (s.mean, s.m2),
)

CATEGORICAL = Kind(
    name="categorical",
    cls=CategoricalSketch,
    zero=lambda: CategoricalSketch.zero(CATS),
    other_zero=lambda: CategoricalSketch.zero(OTHER_CATS),
    batch=categorical_batch,
    concat=lambda a, b: list(a) + list(b),
    bins=CATS,
    other_bins=OTHER_CATS,
    exact=lambda s: (s.categories, s.counts.tolist(), s.missing, s.n),
    approx=lambda s: (),
)


@pytest.fixture(params=[NUMERIC, CATEGORICAL], ids=lambda k: k.name)
def kind(request: pytest.FixtureRequest) -> Kind:
    k: Kind = request.param
    return k


def assert_equivalent(kind: Kind, a: Sketch, b: Sketch) -> None:
    """Counts exactly equal; moments within 1e-9 relative."""
    assert kind.exact(a) == kind.exact(b)
    for x, y in zip(kind.approx(a), kind.approx(b), strict=True):
        assert x == pytest.approx(y, rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------ monoid laws


@pytest.mark.parametrize("size", [0, 1, 37, 1000])
def test_zero_is_identity(kind: Kind, size: int) -> None:
    s = kind.make(np.random.default_rng(size), size)
    assert kind.zero().merge(s) == s
    assert s.merge(kind.zero()) == s
    assert kind.zero().merge(kind.zero()) == kind.zero()


@pytest.mark.parametrize("seed", range(5))
def test_merge_is_commutative(kind: Kind, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = kind.make(rng, 300), kind.make(rng, 50)
    assert a.merge(b) == b.merge(a)  # bit for bit, moments included


@pytest.mark.parametrize("seed", range(5))
def test_merge_is_associative(kind: Kind, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b, c = kind.make(rng, 200), kind.make(rng, 7), kind.make(rng, 1500)
    assert_equivalent(kind, a.merge(b).merge(c), a.merge(b.merge(c)))


@pytest.mark.parametrize(("n1", "n2"), [(0, 10), (10, 0), (1, 1), (500, 1200)])
def test_update_of_concatenation_is_merge_of_updates(kind: Kind, n1: int, n2: int) -> None:
    rng = np.random.default_rng(n1 * 31 + n2)
    a, b = kind.batch(rng, n1), kind.batch(rng, n2)
    whole = kind.zero().update(kind.concat(a, b))
    parts = kind.zero().update(a).merge(kind.zero().update(b))
    assert_equivalent(kind, whole, parts)
    assert_equivalent(kind, whole, kind.zero().update(a).update(b))


def test_many_small_updates_equal_one_big_update(kind: Kind) -> None:
    rng = np.random.default_rng(11)
    chunks = [kind.batch(rng, int(k)) for k in rng.integers(0, 40, 60)]
    whole = kind.zero()
    for ch in chunks:
        whole.update(ch)
    data = chunks[0]
    for ch in chunks[1:]:
        data = kind.concat(data, ch)
    assert_equivalent(kind, whole, kind.zero().update(data))


def test_merge_returns_new_object_and_leaves_inputs_alone(kind: Kind) -> None:
    rng = np.random.default_rng(3)
    a, b = kind.make(rng, 100), kind.make(rng, 100)
    a_bytes, b_bytes = a.to_bytes(), b.to_bytes()
    m = a.merge(b)
    assert m is not a and m is not b
    assert a.to_bytes() == a_bytes and b.to_bytes() == b_bytes
    assert m.total == a.total + b.total


def test_update_returns_self(kind: Kind) -> None:
    s = kind.zero()
    assert s.update(kind.batch(np.random.default_rng(0), 10)) is s


def test_merge_rejects_other_bins_and_other_kinds(kind: Kind) -> None:
    with pytest.raises(SketchMismatch):
        kind.zero().merge(kind.other_zero())
    other_kind = CATEGORICAL if kind is NUMERIC else NUMERIC
    with pytest.raises(SketchMismatch):
        kind.zero().merge(other_kind.zero())


def test_exposed_counts_are_read_only(kind: Kind) -> None:
    s = kind.make(np.random.default_rng(0), 50)
    with pytest.raises(ValueError):
        s.counts[0] = 99
    before = s.counts.copy()
    s.update(kind.batch(np.random.default_rng(1), 50))
    assert s.counts.sum() > before.sum()


def test_equality(kind: Kind) -> None:
    rng = np.random.default_rng(0)
    a = kind.make(rng, 100)
    assert a == a.copy()
    assert a != kind.zero()
    assert a != "not a sketch"
    assert kind.zero() != kind.other_zero()


# ------------------------------------------------------------------ bytes


@pytest.mark.parametrize("size", [0, 1, 2000])
def test_bytes_round_trip(kind: Kind, size: int) -> None:
    s = kind.make(np.random.default_rng(size), size)
    assert kind.from_bytes(s.to_bytes(), kind.bins) == s
    assert kind.from_bytes(s.to_bytes(embed=True)) == s
    assert kind.from_bytes(s.to_bytes(embed=True), kind.bins) == s
    assert kind.from_bytes(s.to_bytes(), kind.bins).to_bytes() == s.to_bytes()


def test_bytes_are_deterministic(kind: Kind) -> None:
    def build() -> Sketch:
        rng = np.random.default_rng(42)
        return kind.make(rng, 500).merge(kind.make(rng, 20))

    assert build().to_bytes() == build().to_bytes()
    assert build().to_bytes(embed=True) == build().to_bytes(embed=True)


def test_bytes_carry_a_fingerprint_not_the_bins(kind: Kind) -> None:
    s = kind.make(np.random.default_rng(0), 10)
    rec = orjson.loads(s.to_bytes())
    assert "edges" not in rec and "categories" not in rec
    expected = edges_fingerprint(EDGES) if kind is NUMERIC else categories_fingerprint(CATS)
    assert rec["fp"] == s.fingerprint == expected


def test_from_bytes_rejects_wrong_fingerprint(kind: Kind) -> None:
    s = kind.make(np.random.default_rng(0), 10)
    with pytest.raises(SketchMismatch):
        kind.from_bytes(s.to_bytes(), kind.other_bins)
    with pytest.raises(SketchMismatch):
        kind.from_bytes(s.to_bytes(embed=True), kind.other_bins)
    with pytest.raises(SketchMismatch):  # needs the bins: the record has only a fingerprint
        kind.from_bytes(s.to_bytes())


def test_from_bytes_rejects_wrong_tag(kind: Kind) -> None:
    other_kind = CATEGORICAL if kind is NUMERIC else NUMERIC
    with pytest.raises(StateCorrupt):
        kind.from_bytes(other_kind.make(np.random.default_rng(0), 5).to_bytes(), kind.bins)
    rec = orjson.loads(kind.zero().to_bytes())
    rec["t"] = "sketch.other"
    with pytest.raises(StateCorrupt):
        kind.from_bytes(orjson.dumps(rec), kind.bins)


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_from_bytes_rejects_wrong_version(kind: Kind, version: object) -> None:
    rec = orjson.loads(kind.make(np.random.default_rng(0), 5).to_bytes())
    rec["v"] = version
    with pytest.raises(StateCorrupt):
        kind.from_bytes(orjson.dumps(rec), kind.bins)


@pytest.mark.parametrize("data", [b"", b"not json", b"[1, 2]", b"null", b'{"t": 1}'])
def test_from_bytes_rejects_garbage(kind: Kind, data: bytes) -> None:
    with pytest.raises(StateCorrupt):
        kind.from_bytes(data, kind.bins)


def test_from_bytes_rejects_truncated(kind: Kind) -> None:
    data = kind.make(np.random.default_rng(0), 50).to_bytes()
    for cut in (1, len(data) // 2, len(data) - 1):
        with pytest.raises(StateCorrupt):
            kind.from_bytes(data[:cut], kind.bins)


def _mutations() -> list[tuple[str, Callable[[dict[str, Any]], None]]]:
    def counts_longer(r: dict[str, Any]) -> None:
        r["counts"].append(0)

    def counts_negative(r: dict[str, Any]) -> None:
        r["counts"][0] = -1

    def counts_float(r: dict[str, Any]) -> None:
        r["counts"][0] = 1.5

    def counts_bool(r: dict[str, Any]) -> None:
        r["counts"][0] = True

    def counts_not_list(r: dict[str, Any]) -> None:
        r["counts"] = "1,2,3"

    def n_off(r: dict[str, Any]) -> None:
        r["n"] += 1

    def missing_negative(r: dict[str, Any]) -> None:
        r["missing"] = -1

    def missing_str(r: dict[str, Any]) -> None:
        r["missing"] = "3"

    def missing_gone(r: dict[str, Any]) -> None:
        del r["missing"]

    def extra_field(r: dict[str, Any]) -> None:
        r["zzz"] = 1

    def fp_not_str(r: dict[str, Any]) -> None:
        r["fp"] = 5

    return [
        ("counts_longer", counts_longer),
        ("counts_negative", counts_negative),
        ("counts_float", counts_float),
        ("counts_bool", counts_bool),
        ("counts_not_list", counts_not_list),
        ("n_off", n_off),
        ("missing_negative", missing_negative),
        ("missing_str", missing_str),
        ("missing_gone", missing_gone),
        ("extra_field", extra_field),
        ("fp_not_str", fp_not_str),
    ]


@pytest.mark.parametrize(("what", "mutate"), _mutations(), ids=[m[0] for m in _mutations()])
def test_from_bytes_rejects_inconsistent_fields(
    kind: Kind, what: str, mutate: Callable[[dict[str, Any]], None]
) -> None:
    rec = orjson.loads(kind.make(np.random.default_rng(0), 50).to_bytes())
    mutate(rec)
    with pytest.raises(StateCorrupt):
        kind.from_bytes(orjson.dumps(rec), kind.bins)


def test_from_bytes_rejects_embedded_bins_that_do_not_match_the_fingerprint(kind: Kind) -> None:
    rec = orjson.loads(kind.make(np.random.default_rng(0), 5).to_bytes(embed=True))
    key = "edges" if kind is NUMERIC else "categories"
    rec[key] = list(kind.other_bins) if kind is CATEGORICAL else OTHER_EDGES.tolist()
    with pytest.raises(StateCorrupt):
        kind.from_bytes(orjson.dumps(rec))


# ------------------------------------------------------------------ numeric


def test_numeric_bins_are_left_open_right_closed() -> None:
    s = NumericSketch.zero(EDGES, REF_MIN, REF_MAX)
    # each value exactly on an edge belongs to the bin that edge closes
    s.update(EDGES.copy())
    assert s.counts.tolist() == [1, 1, 1, 1, 1, 0]
    s.update(np.nextafter(EDGES, np.inf))
    assert s.counts.tolist() == [1, 2, 2, 2, 2, 1]
    x = np.random.default_rng(0).normal(0, 2, 10_000)
    t = NumericSketch.zero(EDGES, REF_MIN, REF_MAX).update(x)
    expected = np.bincount(np.searchsorted(EDGES, x, side="left"), minlength=EDGES.size + 1)
    assert t.counts.tolist() == expected.tolist()


def test_numeric_missing_and_nonfinite() -> None:
    s = NumericSketch.zero(EDGES, REF_MIN, REF_MAX)
    s.update([1.0, None, np.nan, np.inf, -np.inf, np.inf, -3.0, 3.0])  # type: ignore[arg-type]
    assert (s.n, s.missing, s.nonfinite, s.total) == (3, 2, 3, 8)
    assert int(s.counts.sum()) == s.n  # infinities are in no bin
    assert (s.below, s.above) == (1, 1)
    assert (s.min, s.max) == (-3.0, 3.0)
    assert s.mean == pytest.approx(1.0 / 3.0)


def test_numeric_only_missing_values_leave_moments_empty() -> None:
    s = NumericSketch.zero(EDGES, REF_MIN, REF_MAX).update(np.array([np.nan, np.inf]))
    assert s.n == 0 and math.isnan(s.mean) and math.isnan(s.std)
    assert (s.min, s.max) == (math.inf, -math.inf)
    assert NumericSketch.from_bytes(s.to_bytes(), EDGES) == s


def test_numeric_moments_match_numpy() -> None:
    rng = np.random.default_rng(5)
    x = rng.lognormal(1.0, 0.8, 20_000)
    s = NumericSketch.zero(EDGES, REF_MIN, REF_MAX)
    for part in np.array_split(x, 37):
        s.update(part)
    assert s.n == x.size
    assert s.mean == pytest.approx(x.mean(), rel=1e-12)
    assert s.std == pytest.approx(x.std(), rel=1e-10)
    assert s.variance == pytest.approx(x.var(), rel=1e-10)
    assert (s.min, s.max) == (x.min(), x.max())


def test_numeric_moments_survive_a_large_offset() -> None:
    # raw sums of squares would lose every digit of the variance here
    rng = np.random.default_rng(6)
    x = 1e9 + rng.normal(0.0, 1.0, 50_000)
    parts = [NumericSketch.zero(EDGES, REF_MIN, REF_MAX).update(p) for p in np.array_split(x, 100)]
    s = parts[0]
    for p in parts[1:]:
        s = s.merge(p)
    exact_var = float(np.var(x - 1e9))
    assert s.variance == pytest.approx(exact_var, rel=1e-6)
    assert s.mean == pytest.approx(1e9 + float(np.mean(x - 1e9)), rel=1e-15)


def test_numeric_overflowing_moments_round_trip() -> None:
    s = NumericSketch.zero(EDGES, REF_MIN, REF_MAX).update(np.array([1e200, -1e200, 3e300]))
    assert math.isinf(s.m2)
    assert NumericSketch.from_bytes(s.to_bytes(), EDGES) == s


def test_numeric_edges_are_shared_or_frozen() -> None:
    shared = NumericSketch.zero(EDGES, REF_MIN, REF_MAX)
    assert shared.edges is EDGES
    assert shared.merge(shared).edges is EDGES
    assert NumericSketch.from_bytes(shared.to_bytes(), EDGES).edges is EDGES
    mine = np.array([0.0, 1.0])
    s = NumericSketch.zero(mine, -1.0, 2.0)
    assert s.edges is not mine and not s.edges.flags.writeable
    mine[0] = 0.5
    assert s.edges.tolist() == [0.0, 1.0]
    listed = NumericSketch.zero([0.0, 1.0], -1.0, 2.0)
    assert listed == s


@pytest.mark.parametrize(
    ("edges", "lo", "hi"),
    [
        ([1.0, 1.0], 0.0, 2.0),
        ([2.0, 1.0], 0.0, 2.0),
        ([0.0, np.nan], 0.0, 2.0),
        ([0.0, np.inf], 0.0, 2.0),
        ([[0.0, 1.0]], 0.0, 2.0),
        ([0.0, 1.0], 3.0, 2.0),
        ([0.0, 1.0], np.nan, 2.0),
    ],
)
def test_numeric_zero_validates(edges: Any, lo: float, hi: float) -> None:
    with pytest.raises(ValueError):
        NumericSketch.zero(edges, lo, hi)


def test_numeric_single_bin() -> None:
    s = NumericSketch.zero(np.zeros(0), 0.0, 1.0).update(np.array([-1.0, 0.5, 2.0]))
    assert s.counts.tolist() == [3] and s.bins == 1
    assert NumericSketch.from_bytes(s.to_bytes(), np.zeros(0)) == s


def test_numeric_merge_rejects_other_reference_range() -> None:
    a = NumericSketch.zero(EDGES, REF_MIN, REF_MAX)
    b = NumericSketch.zero(EDGES, REF_MIN, REF_MAX + 1.0)
    with pytest.raises(SketchMismatch):
        a.merge(b)


def test_numeric_from_bytes_rejects_bad_moments() -> None:
    rec = orjson.loads(NumericSketch.zero(EDGES, REF_MIN, REF_MAX).to_bytes())
    rec["mean"] = 3.0  # an empty sketch has no mean
    with pytest.raises(StateCorrupt):
        NumericSketch.from_bytes(orjson.dumps(rec), EDGES)
    rec = orjson.loads(NumericSketch.zero(EDGES, REF_MIN, REF_MAX).update([1.0, 2.0]).to_bytes())
    rec["min"], rec["max"] = 2.0, 1.0
    with pytest.raises(StateCorrupt):
        NumericSketch.from_bytes(orjson.dumps(rec), EDGES)
    rec["min"], rec["max"] = 1.0, "big"
    with pytest.raises(StateCorrupt):
        NumericSketch.from_bytes(orjson.dumps(rec), EDGES)
    rec["max"], rec["below"] = 2.0, 3
    with pytest.raises(StateCorrupt):
        NumericSketch.from_bytes(orjson.dumps(rec), EDGES)


def test_numeric_tag_and_version_are_checked_by_the_codec() -> None:
    fields = orjson.loads(NumericSketch.zero(EDGES, REF_MIN, REF_MAX).to_bytes())
    del fields["t"], fields["v"]
    assert NumericSketch.from_bytes(pack("sketch.numeric", 1, fields), EDGES).n == 0
    with pytest.raises(StateCorrupt):
        NumericSketch.from_bytes(pack("sketch.numeric", 2, fields), EDGES)


# ------------------------------------------------------------------ categorical


def test_categorical_buckets() -> None:
    s = CategoricalSketch.zero(CATS)
    s.update(["red", "red", "blue", "purple", None, float("nan"), "", "RED"])  # type: ignore[list-item]
    assert s.counts.tolist() == [2, 0, 1, 3]
    assert (s.n, s.missing, s.other, s.total) == (6, 2, 3, 8)


def test_categorical_accepts_numpy_strings_and_iterators() -> None:
    arr = np.array(["green", "blue", "zzz", "green"])
    a = CategoricalSketch.zero(CATS).update(arr)
    b = CategoricalSketch.zero(CATS).update(v for v in ["green", "blue", "zzz", "green"])
    assert a == b and a.counts.tolist() == [0, 2, 1, 1]


def test_categorical_without_categories_counts_everything_as_other() -> None:
    s = CategoricalSketch.zero(()).update(["a", "b", None])
    assert s.counts.tolist() == [2] and s.missing == 1
    assert CategoricalSketch.from_bytes(s.to_bytes(), ()) == s


@pytest.mark.parametrize("cats", [("a", "a"), ("a", 1)])
def test_categorical_zero_validates(cats: Any) -> None:
    with pytest.raises(ValueError):
        CategoricalSketch.zero(cats)


def test_categorical_fingerprint_depends_on_order_and_boundaries() -> None:
    assert categories_fingerprint(["ab", "c"]) != categories_fingerprint(["a", "bc"])
    assert categories_fingerprint(["a", "b"]) != categories_fingerprint(["b", "a"])
    assert edges_fingerprint([0.0, 1.0]) != edges_fingerprint([0.0, 1.0 + 1e-15])


# ------------------------------------------------------------------ banks


def _numeric_columns() -> list[NumericSketch]:
    return [
        NumericSketch.zero(EDGES, REF_MIN, REF_MAX),
        NumericSketch.zero(OTHER_EDGES, -1.0, 1.0),
        NumericSketch.zero(np.array([0.0]), 0.0, 0.0),
        NumericSketch.zero(np.linspace(-3, 3, 99), -4.0, 4.0),  # the grid lookup
    ]


def _rows(rng: np.random.Generator, m: int, clean: bool) -> np.ndarray:
    x = np.vstack([numeric_batch(rng, m) for _ in range(4)])
    if clean:  # rows 1 and 3 finite: they take the vectorised path
        x[[1, 3]] = rng.normal(0.0, 1.3, (2, m))
    return x


@pytest.mark.parametrize("clean", [False, True])
def test_numeric_bank_equals_one_sketch_per_column(clean: bool) -> None:
    rng = np.random.default_rng(21)
    zeros = _numeric_columns()
    bank = NumericSketchBank.zero(NumericBins.of(*zeros))
    alone = [z.copy() for z in zeros]
    for m in (1, 40, 0, 700, 3):
        x = _rows(rng, m, clean)
        located = bank.bins.locate(x)
        cut = m // 2  # the monitor updates chunks of a batch located once
        bank.update(x[:, :cut], located[:, :cut]).update(x[:, cut:], located[:, cut:])
        for i, sk in enumerate(alone):
            sk.update(x[i])
    for got, want in zip(bank.sketches(), alone, strict=True):
        assert_equivalent(NUMERIC, got, want)
        assert got.fingerprint == want.fingerprint


def test_numeric_bank_holds_sketches_and_merges_like_them() -> None:
    rng = np.random.default_rng(22)
    zeros = _numeric_columns()
    bins = NumericBins.of(*zeros)
    a = [z.copy().update(_rows(rng, 300, False)[i]) for i, z in enumerate(zeros)]
    b = [z.copy().update(_rows(rng, 50, True)[i]) for i, z in enumerate(zeros)]
    bank_a, bank_b = NumericSketchBank.of(bins, a), NumericSketchBank.of(bins, b)
    assert bank_a.sketches() == a  # in and out, bit for bit
    assert [s.to_bytes() for s in bank_a.sketches()] == [s.to_bytes() for s in a]
    merged = bank_a.merge(bank_b).sketches()
    assert merged == [x.merge(y) for x, y in zip(a, b, strict=True)]
    assert bank_a.merge(NumericSketchBank.zero(bins)).sketches() == a  # zero: identity
    assert NumericSketchBank.of(bins, [None, a[1], None, None]).sketches()[1] == a[1]
    bank_a.reset()
    assert bank_a.sketches() == zeros
    other = NumericBins.of(*_numeric_columns()[::-1])
    with pytest.raises(SketchMismatch):
        bank_a.merge(NumericSketchBank.zero(other))


def test_categorical_bank_equals_one_sketch_per_row() -> None:
    rng = np.random.default_rng(23)
    zeros = [
        CategoricalSketch.zero(CATS),
        CategoricalSketch.zero(()),
        CategoricalSketch.zero(OTHER_CATS[:2]),
    ]
    bins = CategoricalBins.of(*zeros)
    bank = CategoricalSketchBank.zero(bins)
    alone = [z.copy() for z in zeros]
    for m in (5, 0, 900):
        values = [categorical_batch(rng, m) for _ in zeros]
        codes = np.array(
            [
                [bins.lookups[r].get(v, bins.sizes[r]) for v in vals]
                for r, vals in enumerate(values)
            ],
            dtype=np.int64,
        ).reshape(len(zeros), m)
        bank.update(codes)
        for sk, vals in zip(alone, values, strict=True):
            sk.update(vals)
    assert bank.sketches() == alone
    twice = bank.merge(CategoricalSketchBank.of(bins, alone)).sketches()
    assert twice == [sk.merge(sk) for sk in alone]
    assert bank.row_totals().tolist() == [sk.n for sk in alone]
    with pytest.raises(SketchMismatch):
        bank.merge(CategoricalSketchBank.zero(CategoricalBins.of(*zeros[::-1])))


def test_grid_binner_equals_searchsorted() -> None:
    rng = np.random.default_rng(0)
    for trial in range(150):
        edges = []
        for _ in range(6):
            k = int(rng.integers(0, 120))
            scale = 10 ** rng.uniform(-3, 3)
            e = np.unique(np.round(rng.normal(0, scale, k), int(rng.integers(0, 6))))
            if trial % 7 == 0 and e.size:  # a crowd of edges: searchsorted for that row
                e = np.unique(np.r_[e, e[0] + np.arange(10) * 1e-9])
            edges.append(e)
        binner = GridBinner(edges)
        x = np.empty((6, 300))
        for i, e in enumerate(edges):
            v = rng.normal(0, 10 ** rng.uniform(-3, 3), 300)
            if e.size:
                v[:50] = rng.choice(e, 50)  # exactly on an edge
                v[50:60] = e[0] - 1e-12
                v[60:70] = e[-1] + 1e-300
                v[70:80] = np.nextafter(rng.choice(e, 10), math.inf)
            x[i] = v
        x[0, 5], x[1, 7], x[2, 9] = math.nan, math.inf, -math.inf
        out = binner.bins(x, np.isfinite(x).all(axis=1))
        for i, e in enumerate(edges):
            ok = np.isfinite(x[i])
            assert (out[i][ok] == np.searchsorted(e, x[i][ok], side="left")).all()
