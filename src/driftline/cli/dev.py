"""``driftline dev up`` and ``driftline demo``: a local stack, and the demo on one."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from driftline.runtime.devstack import (
    DevStack,
    RedisCluster,
    RedisServer,
    given_signing_key,
    run_until_stopped,
)

__all__ = ["demo", "dev_up"]


def dev_up(args: argparse.Namespace) -> int:
    """``driftline dev up``: the stack until a stop signal; 1 when a child dies on its own."""
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="driftline-dev-"))
    redis = RedisCluster() if args.cluster else RedisServer()
    stack = DevStack(workdir, redis=redis)

    def ready(stack: DevStack) -> None:
        services = "Redis Cluster" if args.cluster else "redis-server"
        print(f"Tansu broker and {services} are up (working directory {workdir}).")
        for name, proc in stack.processes().items():
            print(f"  {name}: pid {proc.pid}")
        print("In another shell:")
        kept = given_signing_key() is not None
        for k, v in stack.env().items():
            if k == "DRIFTLINE_REDIS__STATE_SIGNING_KEY":
                note = "the one this shell has" if kept else "a new key: keep it"
                print(f"  export {k}={v}  # {note}")
            else:
                print(f"  export {k}={v}")
        print("Ctrl-C (or SIGTERM) stops them all.", flush=True)

    died = run_until_stopped(stack, ready, remove_workdir=not args.workdir)
    if died is not None:
        print(f"driftline: {died} exited on its own; stopped the rest", file=sys.stderr)
        return 1
    return 0


async def demo(args: argparse.Namespace) -> int:
    """``driftline demo``: the demo driver with the command line's options."""
    from driftline.demo.driver import run_demo

    return await run_demo(
        events=args.events,
        sigmas=args.sigmas,
        window=args.window,
        report=args.report,
        skip_slow_loop=args.skip_slow_loop,
    )
