"""The drift report (internal): :mod:`.build` turns references and history into plain
report data, :mod:`.render` draws it as one self-contained HTML file (Chart.js and its
stylesheet vendored in ``assets/``)."""

from driftline.views.report.build import (
    ReportInput,
    active_alerts,
    build_report,
    classify_state,
    parse_since,
    references_for,
    report_from_store,
)
from driftline.views.report.render import (
    CHARTJS_LICENSE,
    CHARTJS_VERSION,
    content_security_policy,
    page_css,
    render_report,
    write_report,
)

__all__ = [
    "CHARTJS_LICENSE",
    "CHARTJS_VERSION",
    "ReportInput",
    "active_alerts",
    "build_report",
    "classify_state",
    "content_security_policy",
    "page_css",
    "parse_since",
    "references_for",
    "render_report",
    "report_from_store",
    "write_report",
]
