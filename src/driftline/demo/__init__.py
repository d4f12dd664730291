"""The demo (internal; imported only by the CLI): simulated traffic and its driver.

This package owns what exists to show Driftline working, not to run it: the simulated
model server (:mod:`~driftline.demo.simulate`), the labelled SEA scenario built on
river's synthetic stream (:mod:`~driftline.demo.sea`) and the ``driftline demo`` driver
(:mod:`~driftline.demo.driver`). Tests, benchmarks and the compose demo traffic use
the simulators too; no product module imports this package.
"""
