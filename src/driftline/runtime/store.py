"""Partition state in Redis, committed atomically with the Kafka offset it reflects.

A worker that is assigned a Kafka partition calls :meth:`StateStore.acquire`, which
bumps the partition's fencing epoch and returns the last offset whose effect is in
Redis. The worker resumes from the next offset, whatever Kafka's committed offset
says (that commit is advisory, kept for lag metrics only). After each micro-batch it
calls :meth:`StateStore.commit`: one Lua script that checks the epoch, refuses an
offset already applied, and writes the states, the alert outbox and the offset
together. A stale worker (an older epoch) writes nothing.

Guarantee: **effectively-once state** -- the effect of every Kafka offset on the
state is applied exactly once, as long as Kafka retention still holds the records
Redis may have lost (the loss window: up to ~1 s of commits with AOF ``everysec``,
more after an asynchronous-replica failover). Alerts enter the outbox exactly once
per applied offset; publishing them from the outbox is at-least-once.

Every stored value is a signed envelope (:class:`Sealer`): HMAC-SHA256 over the
format version, the name of the place it is stored and the payload, so a record
cannot be altered, forged, or moved to another field or key without
:class:`~driftline.errors.StateCorrupt`. Nothing is ever pickled.

Keys: a partition's ``meta``, ``state``, ``outbox`` and ``side`` share the hash tag
``{group:topic:partition}`` (a script touches one Redis Cluster slot); references and
history are tagged by model (:mod:`driftline.runtime.keyspace`).

See ``docs/redis.md`` for the protocol, sizes and the ACL.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, NoReturn

from pydantic import SecretStr
from redis.exceptions import NoScriptError

from driftline.config import RedisSettings
from driftline.errors import ConfigError, FencedError, StateCorrupt, StateMissing
from driftline.runtime.keyspace import (
    DEFAULT_REFERENCE_VERSION,
    META_FORMAT,
    PartitionKeys,
    _check_name,
    history_key,
    history_models_key,
    model_owner_key,
    partition_keys,
    reference_index_key,
    reference_key,
    state_record_name,
)
from driftline.runtime.redis_client import RedisClient, connect_redis, decodes_responses
from driftline.runtime.sealer import Sealer
from driftline.runtime.store_records import (
    CommitResult,
    HistoryBatch,
    HistorySnapshot,
    Lease,
    RecordWrites,
    ReferenceLookup,
    pack_probes,
    unpack_hits,
)

__all__ = [
    "CommitResult",
    "HistoryBatch",
    "HistorySnapshot",
    "Lease",
    "RecordWrites",
    "ReferenceLookup",
    "StateStore",
    "open_store",
]

# --------------------------------------------------------------------------- the store

_LUA = resources.files("driftline.runtime").joinpath("lua")


@dataclass(frozen=True)
class _Script:
    """A store script: the shared commit prelude followed by the script's own text."""

    text: str
    sha: str

    @classmethod
    def load(cls, name: str, prelude: bool = True) -> _Script:
        text = _LUA.joinpath(name).read_text(encoding="utf-8")
        if prelude:
            text = _LUA.joinpath("commit_prelude.lua").read_text(encoding="utf-8") + "\n" + text
        return cls(text, hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest())


#: acquire, commit and outbox ack of a partition.
_PARTITION_SCRIPT = _Script.load("store_commit.lua")
#: a commit that also writes record hashes (the label joiner's pending predictions).
_RECORDS_SCRIPT = _Script.load("store_join.lua")
#: the label joiner's batched lookups (read-only, no prelude).
_LOOKUP_SCRIPT = _Script.load("store_lookup.lua", prelude=False)

# Claim a model for a partition; returns the previous owner (nil for none). HMGET and
# HSET only: the commands the documented service ACL already grants.
_CLAIM_SCRIPT = """
local before = redis.call('HMGET', KEYS[1], ARGV[1])[1]
if before ~= ARGV[2] then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return before
"""


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes | bytearray) else str(value)


def _entries(rows: Any) -> list[tuple[str, bytes]]:
    """``(entry id, payload)`` of stream entries; entries without a ``d`` field skipped."""
    out: list[tuple[str, bytes]] = []
    for entry_id, fields in rows or []:
        payload = fields.get(b"d", fields.get("d"))
        if payload is None:
            continue
        out.append((_text(entry_id), payload if isinstance(payload, bytes) else payload.encode()))
    return out


def _latest(raw: Mapping[Any, Any]) -> dict[str, bytes]:
    return {_text(k): v if isinstance(v, bytes) else str(v).encode() for k, v in raw.items()}


class StateStore:
    """Per-partition state, outbox and references of one consumer group in Redis.

    ``client`` is a ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``
    with ``decode_responses=False`` (records are binary). Every script and transaction
    stays inside one cluster slot.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str,
        group: str,
        signing_key: bytes | str | SecretStr,
    ) -> None:
        if decodes_responses(client):
            raise ConfigError(
                "StateStore needs a Redis client with decode_responses=False "
                "(state records are binary)"
            )
        self._client = client
        self._prefix = _check_name("key prefix", prefix)
        self._group = _check_name("group", group)
        self._sealer = Sealer(signing_key)

    @classmethod
    def from_settings(
        cls,
        client: RedisClient,
        settings: RedisSettings,
        group: str,
    ) -> StateStore:
        """A store using ``settings.key_prefix`` and ``settings.state_signing_key``.

        Raises
        ------
        ConfigError
            No signing key is configured (there is no default).
        """
        return cls(
            client,
            prefix=settings.key_prefix,
            group=group,
            signing_key=settings.signing_key(),
        )

    def __repr__(self) -> str:
        return f"StateStore(prefix={self._prefix!r}, group={self._group!r})"

    @property
    def sealer(self) -> Sealer:
        """The envelope sealer (signing key inside)."""
        return self._sealer

    def keys(self, topic: str, partition: int) -> PartitionKeys:
        """Redis keys of ``topic``/``partition`` for this store's group."""
        return partition_keys(self._prefix, self._group, topic, partition)

    def _where(self, topic: str, partition: int) -> str:
        return f"{self._group}/{topic}[{partition}]"

    async def _run(self, script: _Script, keys: Sequence[str], *args: str | bytes) -> list[Any]:
        """Run a store script: EVALSHA, or EVAL when the server does not know it yet.

        Returns the reply with its status decoded: ``[status, *rest]``.
        """
        # Bound as plain callables: some redis stubs leave these methods unannotated.
        evalsha: Callable[..., Awaitable[Any]] = self._client.evalsha
        eval_: Callable[..., Awaitable[Any]] = self._client.eval
        try:
            reply = await evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            # EVAL also caches the script, so the next call's EVALSHA finds it.
            reply = await eval_(script.text, len(keys), *keys, *args)
        if not isinstance(reply, list) or not reply:
            raise StateCorrupt(f"unexpected reply from a store script: {reply!r}")
        return [_text(reply[0]), *reply[1:]]

    async def _script(self, keys: PartitionKeys, *args: str | bytes) -> list[Any]:
        """Run the partition script (acquire, commit, ack) on a partition's keys."""
        return await self._run(_PARTITION_SCRIPT, keys.every(), *args)

    # ------------------------------------------------------------------ ownership

    async def acquire(self, topic: str, partition: int) -> Lease:
        """Take ownership of a partition: bump its epoch and read the stored offset.

        One script call, atomic. Any older lease on the partition is fenced from now
        on. Creates the meta record (``offset=-1``, ``epoch=1``) when none exists and
        reports ``fresh=True``.

        Raises
        ------
        StateMissing
            State or outbox exist without meta (their offset is unknown), or state
            fields recorded in meta have vanished (eviction, manual deletion). Nothing
            was changed; an operator inspects and may :meth:`reset_partition`.
        StateCorrupt
            Meta has another layout format or a field that is not a number, or a key
            holds the wrong Redis type.
        """
        keys = self.keys(topic, partition)
        where = self._where(topic, partition)
        token = secrets.token_hex(16)
        status, *rest = await self._script(keys, "acquire", str(META_FORMAT), token)
        if status in ("ok", "fresh"):
            return Lease(
                topic=topic,
                partition=partition,
                epoch=int(rest[0]),
                offset=int(rest[1]),
                fresh=status == "fresh",
                token=token,
                fields=int(rest[2]),
            )
        if status == "garbage":
            raise StateCorrupt(
                f"{where}: meta field {_text(rest[0])} holds {_text(rest[1])[:40]!r}, "
                "not a number (edited by hand?)"
            )
        if status == "orphan":
            raise StateMissing(
                f"{where}: meta is missing but {rest[0]} state fields and {rest[1]} outbox "
                "entries exist; the offset they reflect is unknown"
            )
        if status == "lost":
            raise StateMissing(
                f"{where}: state has {rest[0]} fields but meta records {_text(rest[1])}; "
                "Redis lost data (maxmemory eviction?)"
            )
        if status == "format":
            raise StateCorrupt(
                f"{where}: meta format {_text(rest[0])!r} is not {META_FORMAT} "
                "(written by another Driftline version?)"
            )
        self._script_failure(where, status, rest)

    @staticmethod
    def _script_failure(where: str, status: str, rest: list[Any]) -> NoReturn:
        if status == "wrongtype":
            raise StateCorrupt(f"{where}: key {_text(rest[0])} holds another Redis type")
        raise StateCorrupt(f"{where}: unexpected store script status {status!r}")

    # ------------------------------------------------------------------ state

    async def load(self, lease: Lease, keys: Iterable[str] | None = None) -> dict[str, bytes]:
        """Verified state payloads of the partition: all fields, or only ``keys``.

        Requested keys that do not exist are absent from the result.

        Raises
        ------
        StateCorrupt
            A record fails its envelope check. It is never skipped silently.
        """
        if isinstance(keys, str | bytes):
            raise TypeError("keys must be an iterable of state keys, not one string")
        ok, bad = await self.load_fields(lease, None if keys is None else list(keys))
        for name, exc in bad.items():
            raise StateCorrupt(
                f"{self._where(lease.topic, lease.partition)}: state field {name}: {exc}"
            )
        return ok

    async def load_fields(
        self, lease: Lease, names: Sequence[str] | None = None, *, side: bool = False
    ) -> tuple[dict[str, bytes], dict[str, StateCorrupt]]:
        """Verified payloads of state fields (all, or ``names``; or ``side`` records),
        one by one.

        Returns ``(payloads, refused)``: the fields that exist and pass their envelope
        check, and for each field that fails it, its :class:`StateCorrupt`. One bad
        record does not hide the others (the caller quarantines what it belongs to).
        """
        pk = self.keys(lease.topic, lease.partition)
        key = pk.side if side else pk.state
        items: list[tuple[Any, Any]]
        if names is None:
            raw: dict[Any, Any] = await self._client.hgetall(key)
            items = list(raw.items())
        else:
            wanted = list(dict.fromkeys(names))
            if not wanted:
                return {}, {}
            values: list[Any] = await self._client.hmget(key, wanted)
            items = [(n, v) for n, v in zip(wanted, values, strict=True) if v is not None]
        ok: dict[str, bytes] = {}
        bad: dict[str, StateCorrupt] = {}
        for raw_name, blob in items:
            try:
                name = _text(raw_name)
            except UnicodeDecodeError:
                name = repr(raw_name)
                bad[name] = StateCorrupt(f"field {name} is not UTF-8")
                continue
            try:
                ok[name] = self._sealer.open_sealed(state_record_name(key, name), blob)
            except StateCorrupt as exc:
                bad[name] = exc
        return ok, bad

    async def commit(
        self,
        lease: Lease,
        last_offset: int,
        states: Mapping[str, bytes],
        outbox: Sequence[bytes] = (),
        *,
        expected_offset: int | None = None,
        records: RecordWrites | None = None,
        side: Mapping[str, bytes] | None = None,
        side_deletes: Sequence[str] = (),
    ) -> CommitResult:
        """Write a batch's states and alerts together with the offset they reflect.

        The one commit of every worker: one EVALSHA (EVAL on NOSCRIPT) of a script that
        starts with ``lua/commit_prelude.lua``, atomic in Redis:

        0. Types: a key holding another Redis type -> :class:`StateCorrupt`, nothing
           written.
        1. Fencing: if ``meta.epoch``/``meta.token`` are not the lease's, another
           worker owns the partition -> ``FENCED``, nothing written.
        2. Idempotence: if ``last_offset <= meta.offset`` the batch was already
           applied (a replay or a retried call that did land) -> ``DUPLICATE``,
           nothing written.
           Continuity (only with ``expected_offset``, the offset this lease last
           committed or acquired at): if ``meta.offset`` differs, Redis lost commits
           while the lease stayed valid -> ``REWOUND``, nothing written.
        3. ``HSET`` the states, each sealed for its (key, field).
        4. ``RPUSH`` the outbox payloads, in order; with ``records``, their hashes too
           (``store_join.lua``); otherwise the ``side`` records (sealed like states)
           and the deletion of ``side_deletes``.
        5. ``HSET`` ``meta.offset = last_offset``, ``updated_ms``, ``nstate``.

        Every check that can fail runs before the first write, so a call writes all of
        3-5 or none. Guarantee: **effectively-once state** -- each offset's effect is
        applied exactly once, provided Kafka retention covers Redis's loss window. A
        call that failed on the network may be retried as is: ``DUPLICATE`` then means
        the first attempt was applied.
        """
        if isinstance(last_offset, bool) or not isinstance(last_offset, int) or last_offset < 0:
            raise ValueError(f"last_offset must be a non-negative int, got {last_offset!r}")
        pk = self.keys(lease.topic, lease.partition)
        keys: list[str] = list(pk.all())
        args: list[str | bytes] = [
            "commit",
            str(META_FORMAT),
            str(lease.epoch),
            lease.token,
            str(last_offset),
            "" if expected_offset is None else str(expected_offset),
            str(len(states)),
        ]
        for state_field, payload in states.items():
            if not isinstance(state_field, str) or not state_field:
                raise ValueError(f"state keys must be non-empty strings, got {state_field!r}")
            args.append(state_field)
            args.append(self._sealer.seal(state_record_name(pk.state, state_field), payload))
        args.append(str(len(outbox)))
        args.extend(outbox)
        script = _PARTITION_SCRIPT
        if records is not None:
            if side or side_deletes:
                raise ValueError("side records are written by the partition script only")
            script = _RECORDS_SCRIPT
            names = list(dict.fromkeys([*records.puts, *records.tombs]))
            keys = [*keys, *(self.record_key(lease.topic, lease.partition, n) for n in names)]
            args.extend(records.arguments({n: i + 4 for i, n in enumerate(names)}))
        else:
            keys.append(pk.side)
            side = side or {}
            args.append(str(len(side)))
            for name, payload in side.items():
                args += [name, self._sealer.seal(state_record_name(pk.side, name), payload)]
            args.append(str(len(side_deletes)))
            args.extend(side_deletes)
        status, *rest = await self._run(script, keys, *args)
        if status in ("ok", "duplicate", "fenced", "rewound"):
            return CommitResult(status)
        self._script_failure(self._where(lease.topic, lease.partition), status, rest)

    async def commit_or_raise(
        self,
        lease: Lease,
        last_offset: int,
        states: Mapping[str, bytes],
        outbox: Sequence[bytes] = (),
    ) -> CommitResult:
        """:meth:`commit`, raising :class:`FencedError` instead of returning ``FENCED``.

        Returns ``OK`` or ``DUPLICATE``.
        """
        result = await self.commit(lease, last_offset, states, outbox)
        if result is CommitResult.FENCED:
            raise FencedError(
                f"{self._where(lease.topic, lease.partition)}: epoch {lease.epoch} is stale; "
                "another worker owns the partition"
            )
        return result

    async def stored_position(self, topic: str, partition: int) -> tuple[int, int] | None:
        """``(epoch, offset)`` stored in the partition's meta, or ``None`` without meta.

        Lets a fenced worker tell "another worker took the partition" (a newer epoch)
        from "Redis lost the lease" (no meta, or an older epoch than its own).
        """
        pk = self.keys(topic, partition)
        epoch, offset = await self._client.hmget(pk.meta, ["epoch", "offset"])
        if epoch is None or offset is None:
            return None
        try:
            return int(_text(epoch)), int(_text(offset))
        except ValueError:  # garbage written by hand: acquire will say so
            return None

    # ------------------------------------------------------------------ outbox

    async def outbox_peek(self, lease: Lease, n: int) -> list[bytes]:
        """The first ``n`` alert payloads waiting in the outbox (oldest first)."""
        if n <= 0:
            return []
        pk = self.keys(lease.topic, lease.partition)
        items = await self._client.lrange(pk.outbox, 0, n - 1)
        # The client is built with decode_responses=False: every item is bytes.
        return [i if isinstance(i, bytes) else i.encode() for i in items]

    async def outbox_len(self, lease: Lease) -> int:
        """Number of alert payloads waiting in the outbox."""
        pk = self.keys(lease.topic, lease.partition)
        return int(await self._client.llen(pk.outbox))

    async def outbox_ack(self, lease: Lease, count: int) -> int:
        """Drop the first ``count`` payloads once the alert producer acknowledged them.

        Fenced like :meth:`commit`, so a stale worker cannot trim alerts it no longer
        owns. Returns the number of payloads left.

        Raises
        ------
        FencedError
            Another worker owns the partition; nothing was trimmed.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be a non-negative int, got {count!r}")
        pk = self.keys(lease.topic, lease.partition)
        where = self._where(lease.topic, lease.partition)
        status, *rest = await self._script(
            pk, "ack", str(META_FORMAT), str(lease.epoch), lease.token, str(count)
        )
        if status == "ok":
            return int(rest[1])
        if status == "fenced":
            raise FencedError(f"{where}: epoch {lease.epoch} is stale; outbox not trimmed")
        self._script_failure(where, status, rest)

    # ------------------------------------------------------------------ model ownership

    async def claim_models(
        self, model_ids: Sequence[str], topic: str, partition: int
    ) -> dict[str, str]:
        """Record that ``topic``/``partition`` now carries ``model_ids`` for this group.

        Returns ``{model: "<topic>:<partition>"}`` for each model another partition
        carried before (it moved: a partition count change, another partitioner). One
        atomic script per model on its own key (``{prefix}:owner:{<model_id>}``), all
        in one pipelined round trip; the worker calls it only for streams new to a
        partition.
        """
        if not model_ids:
            return {}
        here = f"{topic}:{partition}"
        async with self._client.pipeline(transaction=False) as pipe:
            for model in model_ids:
                key = model_owner_key(self._prefix, model)
                pipe.eval(_CLAIM_SCRIPT, 1, key, self._group, here)
            replies: list[Any] = await pipe.execute()
        return {
            model: _text(before)
            for model, before in zip(model_ids, replies, strict=True)
            if before is not None and _text(before) != here
        }

    # ------------------------------------------------------------------ references

    async def put_reference(self, model_id: str, version: str, payload: bytes) -> None:
        """Store a model version's reference profile (``version="default"``: fallback)."""
        key = reference_key(self._prefix, model_id, version)
        blob = self._sealer.seal(key, payload)
        # Same hash tag {model_id}: a single-slot transaction.
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(key, blob)
            pipe.sadd(reference_index_key(self._prefix, model_id), version)
            await pipe.execute()

    async def resolve_reference(self, model_id: str, version: str) -> tuple[str, bytes] | None:
        """``(version_used, payload)`` for ``version``, else for ``"default"``, else None.

        A stored but corrupt reference raises :class:`StateCorrupt`; it never falls back.
        """
        (found,) = await self.lookup_references([(model_id, version)])
        if found.error is not None:
            raise StateCorrupt(found.error)
        if found.payload is None or found.version is None:
            return None
        return found.version, found.payload

    async def lookup_references(self, wanted: Sequence[tuple[str, str]]) -> list[ReferenceLookup]:
        """What is stored for each ``(model, version)`` (the version, else ``default``),
        without raising on a bad one, in one round trip.

        A stored but corrupt reference is reported in ``error`` (it never falls back to
        ``default``). Per model, ``SMEMBERS`` of its reference index, then ``MGET`` of
        the version and ``default`` (pipelined, not a transaction: the models' keys are
        in different slots). Reading the index first means a reference being stored meanwhile
        (``put_reference`` writes both in one transaction) is never seen as listed but
        absent, which would read as a deleted reference.
        """
        plans = []
        async with self._client.pipeline(transaction=False) as pipe:
            for model_id, version in wanted:
                versions = [version]
                if version != DEFAULT_REFERENCE_VERSION:
                    versions.append(DEFAULT_REFERENCE_VERSION)
                keys = [reference_key(self._prefix, model_id, v) for v in versions]
                pipe.smembers(reference_index_key(self._prefix, model_id))
                # MGET by name: redis-py's cluster pipeline refuses ``mget`` (it could span
                # slots); these keys share the model's slot, so the node that owns it
                # answers, on a cluster as on one server.
                pipe.execute_command("MGET", *keys)
                plans.append((versions, keys))
            replies: list[Any] = await pipe.execute() if plans else []
        out: list[ReferenceLookup] = []
        for i, (versions, keys) in enumerate(plans):
            members, blobs = replies[2 * i], replies[2 * i + 1]
            listed = bool({_text(m) for m in members} & set(versions))
            out.append(self._first_reference(versions, keys, blobs, listed))
        return out

    def _first_reference(
        self, versions: list[str], keys: list[str], blobs: list[Any], listed: bool
    ) -> ReferenceLookup:
        for v, key, blob in zip(versions, keys, blobs, strict=True):
            if blob is not None:
                try:
                    return ReferenceLookup(self._sealer.open_sealed(key, blob), v, listed=True)
                except StateCorrupt as exc:
                    return ReferenceLookup(None, v, error=str(exc), listed=True)
        return ReferenceLookup(None, None, listed=listed)

    async def get_reference(self, model_id: str, version: str) -> bytes | None:
        """Reference payload of ``version``, falling back to ``"default"``; None if neither."""
        found = await self.resolve_reference(model_id, version)
        return None if found is None else found[1]

    async def list_references(self, model_id: str) -> list[str]:
        """Versions with a stored reference, sorted."""
        index = reference_index_key(self._prefix, model_id)
        members: set[Any] = await self._client.smembers(index)
        return sorted(_text(m) for m in members)

    # ------------------------------------------------------------------ history

    async def append_history(self, batches: Sequence[HistoryBatch]) -> int:
        """Append history entries of one or more models in one round trip.

        ``XADD key MAXLEN ~ n * d <payload>`` per entry, ``HSET`` of the ``latest``
        hash and ``SADD`` of the model to ``{prefix}:hist:models``, in one
        non-transactional pipeline (each model's keys share a slot; the pipeline may
        span slots, so it is not a transaction). Best effort by design: history is
        observability data, written after the state commit. Returns the number of
        stream entries written.
        """
        written = 0
        async with self._client.pipeline(transaction=False) as pipe:
            for b in batches:
                for kind, payloads in (
                    ("windows", b.windows),
                    ("alerts", b.alerts),
                    ("perf", b.perf),
                ):
                    if not payloads:
                        continue
                    key = history_key(self._prefix, b.model_id, kind)
                    cap = int(b.maxlen.get(kind, 10_000))
                    if cap < 1:
                        raise ValueError(f"maxlen for {kind} must be positive, got {cap}")
                    for payload in payloads:
                        pipe.xadd(key, {"d": payload}, maxlen=cap, approximate=True)
                        written += 1
                if b.latest:
                    latest: dict[Any, Any] = dict(b.latest)
                    pipe.hset(history_key(self._prefix, b.model_id, "latest"), mapping=latest)
                pipe.sadd(history_models_key(self._prefix), b.model_id)
            if len(pipe):
                await pipe.execute()
        return written

    async def read_history(
        self, model_id: str, kind: str, *, count: int, before: str | None = None
    ) -> list[tuple[str, bytes]]:
        """Up to ``count`` entries of a history stream, newest first (``XREVRANGE``).

        ``before`` is an entry id: only older entries are returned (paging).
        Returns ``(entry id, payload)`` pairs; entries without a ``d`` field are skipped.
        """
        if count < 1:
            return []
        key = history_key(self._prefix, model_id, kind)
        top = f"({before}" if before else "+"
        rows: Any = await self._client.xrevrange(key, max=top, min="-", count=count)
        return _entries(rows)

    async def history_latest(self, model_id: str) -> dict[str, bytes]:
        """The ``latest`` hash of a model: ``version\x1fsegment`` -> status JSON."""
        raw: dict[Any, Any] = await self._client.hgetall(
            history_key(self._prefix, model_id, "latest")
        )
        return _latest(raw)

    async def history_models(self, batch: int = 1000) -> list[str]:
        """Model ids that have history, sorted.

        Read with ``SSCAN``, ``batch`` members per call: a set of 100 000 models is never
        one O(N) command that holds Redis (and the workers' commits) up.
        """
        names: set[str] = set()
        key = history_models_key(self._prefix)
        async for member in self._client.sscan_iter(key, count=batch):
            names.add(_text(member))
        return sorted(names)

    async def history_snapshots(
        self, model_ids: Sequence[str], *, alerts: int, perf: int = 1
    ) -> list[HistorySnapshot]:
        """What the status page shows of each model, in one pipelined round trip.

        Per model: its ``latest`` hash, its newest ``alerts`` alert entries and its
        newest ``perf`` performance points (newest written first, as
        :meth:`read_history` returns them; not in event-time order: the joiner writes a
        point when labels join, and they join out of order).
        """
        if not model_ids:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for model in model_ids:
                pipe.hgetall(history_key(self._prefix, model, "latest"))
                pipe.xrevrange(history_key(self._prefix, model, "alerts"), count=alerts)
                pipe.xrevrange(history_key(self._prefix, model, "perf"), count=perf)
            replies: list[Any] = await pipe.execute()
        return [
            HistorySnapshot(
                model,
                latest=_latest(replies[3 * i]),
                alerts=_entries(replies[3 * i + 1]),
                perf=_entries(replies[3 * i + 2]),
            )
            for i, model in enumerate(model_ids)
        ]

    # ------------------------------------------------------------------ label join records

    def record_key(self, topic: str, partition: int, name: str) -> str:
        """Key of a partition-scoped record hash (same hash tag as the partition's state).

        Used by the label joiner for its pending predictions:
        ``{prefix}:{<group>:<topic>:<partition>}:r:<name>``.
        """
        if not name or "\x00" in name:
            raise ValueError("record name must be non-empty and free of NUL")
        base = self.keys(topic, partition).meta[: -len(":meta")]
        return f"{base}:r:{name}"

    async def lookup_records(
        self,
        topic: str,
        partition: int,
        names: Sequence[str],
        probes: Sequence[tuple[bytes, Sequence[int]]],
    ) -> list[tuple[int, bytes] | None]:
        """Batched lookup of record fields in the partition's record hashes.

        ``names`` are record names (see :meth:`record_key`); each probe is
        ``(field, indexes into names)``, tried in order until a hash holds the field.
        Returns, per probe, ``(index into names, value)`` of the first hit, or None.

        One script call for the whole batch (``lua/store_lookup.lua``: round by round,
        one ``HMGET`` per hash), probes in and hits out packed in one string each, so
        neither side pays per field. Read-only, so it needs no lease.
        """
        if not any(idxs for _, idxs in probes):
            return [None] * len(probes)
        keys = [self.record_key(topic, partition, n) for n in names]
        status, *rest = await self._run(_LOOKUP_SCRIPT, keys, pack_probes(probes))
        if status != "ok" or len(rest) != 1:
            raise StateCorrupt(f"unexpected reply from the lookup script: {status!r}")
        return unpack_hits(rest[0], len(probes))

    async def peek(self, topic: str, partition: int) -> tuple[int, dict[str, bytes]] | None:
        """``(stored offset, verified state payloads)`` without taking a lease.

        Read-only, for reports and tools: it fences nobody (unlike :meth:`acquire`).
        The state and the offset are read in one ``MULTI``/``EXEC`` (one slot), so they
        match. ``None`` when the partition has no meta.

        Raises
        ------
        StateCorrupt
            A record fails its envelope check.
        """
        pk = self.keys(topic, partition)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hmget(pk.meta, ["offset"])
            pipe.hgetall(pk.state)
            (offset,), raw = await pipe.execute()
        if offset is None:
            return None
        out: dict[str, bytes] = {}
        for name, blob in raw.items():
            state_field = _text(name)
            out[state_field] = self._sealer.open_sealed(
                state_record_name(pk.state, state_field), blob
            )
        return int(_text(offset)), out

    async def stored_partitions(self, topic: str, block: int = 64) -> list[int]:
        """The partitions of ``topic`` this group has state for (a meta record), from
        Redis alone: for reports that must work with the broker down.

        A worker creates a partition's meta when it first takes the partition
        (:meth:`acquire`), so the stored ones are 0, 1, ... with gaps only where no
        worker ever took one. ``EXISTS`` of the meta keys, ``block`` at a time in one
        pipelined round trip (not a transaction: they are in different slots), until a
        block holds none. No ``SCAN``: the service ACL (docs/redis.md) grants none.
        """
        found: list[int] = []
        start = 0
        while True:
            async with self._client.pipeline(transaction=False) as pipe:
                for p in range(start, start + block):
                    pipe.exists(self.keys(topic, p).meta)
                replies: list[Any] = await pipe.execute()
            here = [start + i for i, n in enumerate(replies) if int(n)]
            if not here:
                return found
            found.extend(here)
            start += block

    # ------------------------------------------------------------------ tools

    async def reset_partition(self, topic: str, partition: int) -> int:
        """Delete a partition's meta, state and outbox (tools and tests, not the hot path).

        Fences every current lease (its next commit finds no meta). Needs ``DEL``,
        which the service ACL in ``docs/redis.md`` does not grant. Returns the number
        of keys deleted.
        """
        return int(await self._client.delete(*self.keys(topic, partition).every()))


def open_store(settings: RedisSettings, group: str) -> tuple[RedisClient, StateStore]:
    """A Redis client and consumer group ``group``'s :class:`StateStore`, from settings.

    The client is one server's or, with ``settings.cluster``, a Redis Cluster's
    (:func:`~driftline.runtime.redis_client.connect_redis`: URL, TLS, credentials,
    timeouts); the caller closes it (``await client.aclose()``).
    """
    settings.signing_key()  # no key, no client: fail before connecting
    client = connect_redis(settings)
    return client, StateStore.from_settings(client, settings, group)
