"""Spread over seeds of rows of ``fusion_classification_results.py``: held-out metrics from several work folders.

Each work folder is one run of ``fusion_classification_results.py --seed S`` (dataset and training seed); this
script reads their ``results.json`` and writes, per row (``--row``, repeatable; with its ``--roi`` twin where one was
measured), one line per seed plus the mean, min and max of the held-out AUC, balanced accuracy, macro-F1 and
Cohen's kappa, the smallest lower 95 % bound of the AUC (how far above chance the worst seed stays) and the classes
never predicted::

    python benchmarks/seed_spread.py --row abaf --row base --workdirs /tmp/fcr /tmp/fcr_s1 /tmp/fcr_s2 \\
        --append benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_file import recorded_command, report, with_interval


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", required=True, action="append", help="row of fusion_classification_results.py, "
                        "e.g. abaf (repeatable)")
    parser.add_argument("--device", default="CPU (2 cores)", help="the device the runs were measured on, for the title")
    parser.add_argument("--workdirs", nargs="+", required=True, help="work folders of runs with different --seed")
    parser.add_argument("--append", default=None, help="append the table to this markdown file")
    return parser.parse_args()


def row_results(workdirs: list[str], row: str) -> list[tuple[str, dict]]:
    out = []
    for workdir in workdirs:
        path = os.path.join(workdir, "results.json")
        with open(path) as f:
            results = json.load(f)
        if row not in results:
            raise SystemExit(f"{path} has no row '{row}'; rows: {', '.join(results)}")
        out.append((workdir, results[row]))
    return out


METRICS = (("auc", "AUC"), ("balanced_accuracy", "balanced accuracy"), ("macro_f1", "macro-F1"),
           ("cohen_kappa", "kappa"))


def _spread(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{sum(values) / len(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def table(rows: list[str], measured: dict, device: str) -> list[str]:
    lines = [f"### Seed spread, {datetime.date.today()}, {device}, torch {torch.__version__}", "",
             f"`{recorded_command(__file__)}`", "",
             "Each seed is a separate run of `fusion_classification_results.py --seed S` (a new synthetic dataset and "
             "a new training); the command that measured it is listed per line. Mean (min-max) over the seeds.", "",
             "| row | run | AUC | balanced accuracy | macro-F1 | kappa | classes never predicted | measured by |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    summary = ["", "| row | seeds | " + " | ".join(name for _, name in METRICS) + " | smallest lower AUC bound |",
               "| --- | --- | " + " | ".join("---" for _ in METRICS) + " | --- |"]
    for row in rows:
        runs = measured[row]
        for workdir, m in runs:
            never = sum(1 for c in m["predicted_class_counts"].values() if c == 0)
            lines.append(f"| {row} | {workdir} | {with_interval(m, 'auc')} | {with_interval(m, 'balanced_accuracy')} | "
                         f"{m['macro_f1']:.3f} | {with_interval(m, 'cohen_kappa')} | {never} | "
                         f"`{m.get('command', 'not recorded')}` |")
        bounds = [m["intervals"]["auc"]["low"] for _, m in runs if m.get("intervals", {}).get("auc", {}).get("low")
                  is not None]
        lowest = f"{min(bounds):.3f}" if bounds else "n/a"
        summary.append(f"| {row} | {len(runs)} | " + " | ".join(_spread([m.get(k) for _, m in runs])
                                                                 for k, _ in METRICS) + f" | {lowest} |")
    return lines + summary


def main() -> None:
    args = arguments()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = []
    for row in args.row:
        twin = row + " --roi"
        rows.append(row)
        if all(twin in json.loads(Path(os.path.join(w, "results.json")).read_text()) for w in args.workdirs):
            rows.append(twin)
    rows = list(dict.fromkeys(rows))  # "--row abaf --row 'abaf --roi'" lists the twin once
    report(table(rows, {r: row_results(args.workdirs, r) for r in rows}, args.device), args.append)


if __name__ == "__main__":
    main()
