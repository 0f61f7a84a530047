"""Shared by the benchmark scripts: log a markdown table and optionally append it to RESULTS.md."""

import logging
from typing import Optional, Sequence

logger = logging.getLogger("benchmarks")


def report(lines: Sequence[str], append: Optional[str]) -> None:
    """Log the table made of ``lines``; append it to ``append`` (a markdown file) when given."""
    table = "\n".join(lines) + "\n"
    logger.info("%s", table)
    if append:
        with open(append, "a") as f:
            f.write("\n" + table)
