"""``report.html``: one self-contained page (inline CSS and SVG) to read a run in the morning.

The page and its summary (``_page``), one section per job and the endpoints (``_sections``),
and the SVG charts (``_svg``).
"""

from pipeline.report._page import render_report, write_report

__all__ = ["render_report", "write_report"]
