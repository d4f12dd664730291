"""The ``driftline`` command line (internal; the entry point is :func:`main`).

:func:`main` parses the arguments (:mod:`driftline.cli.parser`, whose ``USAGE`` lists
the commands) and hands each command to its group's module: :mod:`.reference`,
:mod:`.replay`, :mod:`.workers` (monitor, labels, retrain), :mod:`.alerts`,
:mod:`.report` (report, serve) and :mod:`.dev` (dev up, demo). Configuration comes
from ``DRIFTLINE_*`` environment variables (:mod:`driftline.config`).

Errors are one line on stderr, ``driftline: error: ...``, never a traceback (``--debug``
adds it). The exit status is the same convention for every command:

* 0: done;
* 1: failure: a server that cannot be reached, an internal error;
* 2: a usage or input error: a bad option, a missing or malformed file, a bad value,
  an unknown model, settings that do not validate, or input rows refused (the command
  did its work on the rest and printed a summary of the reasons; rows set aside into
  a dead-letter file on request, ``--on-bad-value dlq``/``--dlq``, do not count).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import traceback
from collections.abc import Sequence

from driftline.cli.parser import build_parser
from driftline.config import load_settings
from driftline.errors import DriftlineError, StateError

__all__ = ["EXIT_FAILURE", "EXIT_INPUT", "EXIT_OK", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INPUT = 2


def _run(args: argparse.Namespace) -> int:
    from driftline.cli import alerts, dev, reference, replay, report, workers
    from driftline.runtime.resilience import QuietRepeats

    cmd = args.cmd
    if cmd == "dev":
        return dev.dev_up(args)
    if cmd == "demo":
        return asyncio.run(dev.demo(args))
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for handler in logging.getLogger().handlers:  # aiokafka's repeats: once per 30 s
        handler.addFilter(QuietRepeats())
    a = args
    if cmd == "monitor":
        return asyncio.run(workers.monitor(a, settings))
    if cmd == "reference":
        build = args.ref_cmd == "build"
        fn = reference.reference_build if build else reference.reference_show
        return asyncio.run(fn(a, settings))
    if cmd == "replay":
        return asyncio.run(replay.replay(a, settings))
    if cmd == "alerts":
        return asyncio.run(alerts.alerts(a, settings))
    if cmd == "dead-letters":
        return asyncio.run(alerts.dead_letters(a, settings))
    if cmd == "report":
        return asyncio.run(report.report(a, settings))
    if cmd == "serve":
        return report.serve(a, settings)
    if cmd == "status":
        return asyncio.run(report.status(a, settings))
    if cmd == "retrain":
        return asyncio.run(workers.retrain(a, settings))
    if cmd == "labels":
        return asyncio.run(workers.labels(a, settings))
    return EXIT_FAILURE


#: What a command that found no server does on files instead: a person trying
#: Driftline on their own files with no Kafka or Redis running.
_WITHOUT_SERVERS = {
    "labels": (
        "; 'driftline dev up' starts both here; on files, without servers: driftline "
        "replay --events FILE --labels FILE --performance"
    ),
    "reference build": "; without Redis: --out FILE writes the reference to a file",
    "report": "; on files, without servers: --events FILE --reference FILE --out FILE",
}


def _command(args: argparse.Namespace) -> str:
    """The command as typed: ``labels``, ``reference build``."""
    sub = getattr(args, "ref_cmd", None)
    return f"{args.cmd} {sub}" if sub else str(args.cmd)


#: A server in aiokafka's "Unable to bootstrap from [...]": (host, port, address family).
_KAFKA_HOST = re.compile(r"\('([^']*)', (\d+), <AddressFamily\.\w+: \d+>\)")


def _unreachable(exc: BaseException) -> str | None:
    """A one-line cause when ``exc`` is a server that cannot be reached, else ``None``."""
    mod = type(exc).__module__.split(".")[0]
    if mod == "redis":
        return f"Redis: {exc or type(exc).__name__} (is it running? DRIFTLINE_REDIS__URL)"
    if mod == "aiokafka" or mod == "kafka":
        # aiokafka names the servers as resolved tuples: ('127.0.0.1', 1, <AddressFamily...>)
        said = _KAFKA_HOST.sub(r"\1:\2", str(exc)) or type(exc).__name__
        return f"Kafka: {said} (DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS)"
    if isinstance(exc, ConnectionError | TimeoutError):
        return f"{type(exc).__name__}: {exc}"
    return None


def _error(message: str) -> None:
    text = " ".join(str(message).split())  # one line, whatever the message holds
    print(f"driftline: error: {text}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``driftline`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader stopped reading (`driftline reference show ... | head`): nothing
        # is wrong. Later writes (and the interpreter's own flush) go nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except BaseException as exc:  # every error ends as one line and a documented status
        if isinstance(exc, SystemExit):
            raise
        if getattr(args, "debug", False):
            traceback.print_exc()
        if isinstance(exc, DriftlineError) and not isinstance(exc, StateError):
            _error(str(exc))
            return EXIT_INPUT
        if isinstance(exc, StateError):
            _error(f"stored state: {exc}")
            return EXIT_FAILURE
        if isinstance(exc, FileNotFoundError | IsADirectoryError | PermissionError):
            _error(f"{exc.filename}: {exc.strerror}")
            return EXIT_INPUT
        down = _unreachable(exc)
        if down is not None:
            _error(f"cannot reach {down}{_WITHOUT_SERVERS.get(_command(args), '')}")
            return EXIT_FAILURE
        _error(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the trace)")
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
