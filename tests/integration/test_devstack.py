from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from support import MONITOR_SRC

pytestmark = pytest.mark.integration


async def test_broker_round_trip(stack, unique):
    topic = f"smoke-{unique}"
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.broker.bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    await admin.close()
    prod = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap)
    await prod.start()
    for i in range(10):
        await prod.send_and_wait(topic, f"v{i}".encode(), key=b"k")
    await prod.stop()
    cons = AIOKafkaConsumer(
        topic, bootstrap_servers=stack.broker.bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await cons.start()
    got = []
    while len(got) < 10:
        batch = await cons.getmany(timeout_ms=2000)
        assert batch, "no records within 2s"
        for recs in batch.values():
            got.extend(r.value for r in recs)
    await cons.stop()
    assert got == [f"v{i}".encode() for i in range(10)]


async def test_redis_answers(redis_client):
    assert await redis_client.ping() is True
    info = await redis_client.config_get("appendonly")
    assert {str(k): v for k, v in info.items()}["appendonly"] in ("yes", b"yes")


# ------------------------------------------------------------------- driftline dev up


def _identity(pid: int) -> tuple[int, str] | None:
    """(pid, start time) of a live process, None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else (pid, fields[19])


def _children(pid: int) -> dict[tuple[int, str], str]:
    """Live child processes of ``pid``: identity -> command name."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        comm, rest = stat.split(" (", 1)[1].rsplit(")", 1)
        if int(rest.split()[1]) == pid and (ident := _identity(int(entry.name))):
            out[ident] = comm
    return out


def _kill_survivors(children: dict[tuple[int, str], str]) -> list[str]:
    """Names of the children still running; they are SIGKILLed so that no test leaks them."""
    alive = {ident: name for ident, name in children.items() if _identity(ident[0]) == ident}
    for pid, _ in alive:
        os.kill(pid, signal.SIGKILL)
    return sorted(alive.values())


class DevUp:
    """``python -m driftline dev up`` as a child, its temporary directory under ``tmp``."""

    def __init__(self, tmp: Path, *args: str, unset: tuple[str, ...] = ()) -> None:
        self.tmp, self.log = tmp / "tmp", tmp / "dev-up.log"
        self.tmp.mkdir()
        env = {
            **{k: v for k, v in os.environ.items() if k not in unset},
            "PYTHONPATH": os.pathsep.join([MONITOR_SRC, os.environ.get("PYTHONPATH", "")]),
            "TMPDIR": str(self.tmp),
        }
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "driftline", "dev", "up", *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        return self.log.read_text()

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while "stops them all" not in self.text():
            assert self.proc.poll() is None, f"dev up exited early:\n{self.text()}"
            assert time.monotonic() < deadline, f"dev up not ready:\n{self.text()}"
            time.sleep(0.1)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"dev up did not exit:\n{self.text()}") from None


@pytest.mark.parametrize(
    ("sig", "args"),
    [(signal.SIGTERM, ()), (signal.SIGINT, ()), (signal.SIGTERM, ("--cluster",))],
    ids=["SIGTERM", "SIGINT", "cluster-SIGTERM"],
)
def test_dev_up_stops_its_children_and_removes_its_directory_on_a_signal(tmp_path, sig, args):
    dev, children = DevUp(tmp_path, *args), {}
    try:
        dev.wait_ready()
        children = _children(dev.proc.pid)
        redis_count = 3 if args else 1
        assert sorted(children.values()) == ["redis-server"] * redis_count + ["tansu"]
        (workdir,) = dev.tmp.iterdir()
        assert f"working directory {workdir}" in dev.text()
        # A cluster's variables make a Driftline process use the cluster client.
        assert ("export DRIFTLINE_REDIS__CLUSTER=true" in dev.text()) == bool(args)
        dev.proc.send_signal(sig)
        assert dev.wait() == 0, dev.text()
    finally:
        if dev.proc.poll() is None:
            dev.proc.kill()
        survivors = _kill_survivors(children)
    assert survivors == [], f"orphans left running:\n{dev.text()}"
    assert list(dev.tmp.iterdir()) == []


@pytest.mark.parametrize("given", [True, False], ids=["key-set", "no-key"])
def test_dev_up_keeps_the_signing_key_the_shell_has(tmp_path, given):
    """`export DRIFTLINE_REDIS__STATE_SIGNING_KEY=...` (as README says), `reference build
    --out`, then `dev up`: it printed a new key to export, and every file and state
    signed with the first one failed its signature after the user copied the exports.
    It keeps the shell's key, and says which it printed."""
    name = "DRIFTLINE_REDIS__STATE_SIGNING_KEY"
    dev, children = DevUp(tmp_path, unset=() if given else (name,)), {}
    try:
        dev.wait_ready()
        children = _children(dev.proc.pid)
        (line,) = [x for x in dev.text().splitlines() if f"export {name}=" in x]
        key = line.split("=", 1)[1].split()[0]
        if given:
            assert key == os.environ[name] and line.endswith("# the one this shell has")
        else:
            assert len(key) == 64 and key != os.environ[name]
            assert line.endswith("# a new key: keep it")
        dev.proc.send_signal(signal.SIGTERM)
        assert dev.wait() == 0, dev.text()
    finally:
        if dev.proc.poll() is None:
            dev.proc.kill()
        _kill_survivors(children)  # a failed assertion leaves no broker or Redis behind


def test_dev_up_stops_everything_when_a_child_dies(tmp_path):
    dev, children = DevUp(tmp_path), {}
    try:
        dev.wait_ready()
        children = _children(dev.proc.pid)
        (redis_pid,) = [ident[0] for ident, name in children.items() if name == "redis-server"]
        os.kill(redis_pid, signal.SIGKILL)
        assert dev.wait() == 1, dev.text()
    finally:
        if dev.proc.poll() is None:
            dev.proc.kill()
        survivors = _kill_survivors(children)
    assert f"(pid {redis_pid}, exit status -9) exited on its own" in dev.text()
    assert survivors == []
    assert list(dev.tmp.iterdir()) == []
