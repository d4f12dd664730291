"""What people read (internal): reports, the status page and alert text.

This package owns the presentation of what Driftline stored or published: the HTML
drift report (:mod:`~driftline.views.report`: data from references and history, then
one self-contained HTML file), the live status page (:mod:`~driftline.views.status`),
alert formatting, filtering and following (:mod:`~driftline.views.alerts`) and the
slow loop's text report (:mod:`~driftline.views.slow_loop`). Views read Redis and
Kafka through the runtime; nothing below them imports a view. Internal: module paths
may change; the public API is :mod:`driftline`.
"""
