"""`kernelgen report`: one static HTML page on a work folder's run.

Pipelines add panels built from `kernelgen.report.panel` through their report hook
(`[report] panels` in `kernel-metadata/pipeline.toml`), receiving a
`kernelgen.report.hooks.ReportContext`.
"""

from kernelgen.report.build import build_report, write_report

__all__ = ["build_report", "write_report"]
