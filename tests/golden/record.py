"""Record the golden fixtures from the current cores.

Run from the repository root::

    PYTHONPATH=src python tests/golden/record.py              # every scenario
    PYTHONPATH=src python tests/golden/record.py NAME ...     # some scenarios

Re-record only when a change of behaviour is intended, and say so (and why) in the
commit message: the fixtures are the oracle ``tests/unit/test_golden.py`` holds the
fast-loop and slow-loop cores to. The references (``references.json``) are rebuilt and
rewritten only when every scenario is recorded.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the golden package

import orjson  # noqa: E402

from golden import scenarios  # noqa: E402


def record_references() -> None:
    refs = {name: build() for name, build in scenarios.REFERENCE_BUILDERS.items()}
    data = {name: scenarios.reference_record(ref) for name, ref in refs.items()}
    lines = [f"{orjson.dumps(k).decode()}:{orjson.dumps(v).decode()}" for k, v in data.items()]
    scenarios.REFERENCES_FILE.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    scenarios.recorded_references.cache_clear()


def record(name: str) -> int:
    scn = scenarios.SCENARIOS[name]
    rec = scenarios.run(scn)
    scn.covers(rec)
    data = scenarios.encode(rec)
    assert scenarios.decode(data) == scenarios.plain(rec), f"{name}: encoding is not reversible"
    scenarios.fixture_path(name).write_bytes(data)
    return len(data)


def main(argv: list[str]) -> int:
    unknown = [n for n in argv if n not in scenarios.SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    if not argv:
        record_references()
        for stale in scenarios.HERE.glob("*.json"):
            if stale != scenarios.REFERENCES_FILE and stale.stem not in scenarios.SCENARIOS:
                stale.unlink()
    total = scenarios.REFERENCES_FILE.stat().st_size
    for name in argv or list(scenarios.SCENARIOS):
        size = record(name)
        total += size
        print(f"{name:40s} {size / 1024:8.1f} KiB")
    print(f"{'total (with references.json)':40s} {total / 1024:8.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
