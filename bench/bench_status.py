"""Status page index latency with many models (issue 16): prints, asserts nothing.

Run: ``python bench/bench_status.py [--models 10000 100000]``

Starts a redis-server, fills the models set with N names (plus one real model with
history), starts the status page in-process and times the first (cold) and a cached
request of ``/`` and of the last page. Baseline before issue 16 (the index read every
model one by one): 3.7 s at 10 000 models, 503 "redis unavailable" at 100 000.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
import urllib.request
from pathlib import Path

import redis.asyncio as aioredis

from driftline.config import Settings
from driftline.runtime.devstack import RedisServer
from driftline.runtime.keyspace import history_models_key
from driftline.views.status import PAGE_SIZE, StatusServer

BASELINE = {10_000: "3.7 s", 100_000: "503 after 20 s"}


async def _seed(url: str, prefix: str, n: int) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        key = history_models_key(prefix)
        for start in range(0, n, 10_000):
            await client.sadd(key, *(f"m{i:07d}" for i in range(start, min(n, start + 10_000))))
    finally:
        await client.aclose()


def _timed(url: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:  # noqa: S310
        r.read()
        return r.status, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dl-bench-status-") as tmp:
        redis = RedisServer().start(Path(tmp) / "redis")
        try:
            print(f"{'models':>8} {'first /':>10} {'cached /':>10} {'last page':>10}  baseline")
            for n in args.models:
                prefix = f"b{n}"
                asyncio.run(_seed(redis.url, prefix, n))
                settings = Settings(
                    redis={
                        "url": redis.url,
                        "key_prefix": prefix,
                        "state_signing_key": secrets.token_hex(32),
                    },
                    metrics_port=0,
                )
                server = StatusServer(settings, port=0).start()
                try:
                    s1, first = _timed(server.url + "/")
                    s2, cached = _timed(server.url + "/")
                    last_page = -(-n // PAGE_SIZE)
                    s3, last = _timed(server.url + f"/?page={last_page}")
                finally:
                    server.stop()
                assert (s1, s2, s3) == (200, 200, 200)
                print(
                    f"{n:>8,} {first:>9.3f}s {cached:>9.3f}s {last:>9.3f}s  {BASELINE.get(n, '-')}"
                )
        finally:
            redis.stop()


if __name__ == "__main__":
    main()
