"""The visual report: per-volume overlay PNGs, ROC / PR curves and a static index.html.

matplotlib (the ``[report]`` extra) is imported only while a report is being drawn, never by importing this
package.
"""

from mood_detector.report.api import ReportConfig, ReportResult, build_report
from mood_detector.report.render import RenderConfig

__all__ = ["ReportConfig", "ReportResult", "RenderConfig", "build_report"]
