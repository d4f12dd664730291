"""``driftline dev up`` and ``driftline demo``: a local stack, and the demo on one."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from driftline.runtime.devstack import DevStack

__all__ = ["demo", "dev_up"]

def dev_up(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="driftline-dev-"))
    stack = DevStack(workdir).start()
    print("Tansu broker and redis-server are up. In another shell:")
    for k, v in stack.env().items():
        print(f"  export {k}={v}")
    print("Ctrl-C stops both.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
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
