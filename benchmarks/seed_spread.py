"""Spread over seeds of one row of ``fusion_classification_results.py``: its held-out metrics from several work folders.

Each work folder is one run of ``fusion_classification_results.py --seed S`` (dataset and training seed); this
script reads their ``results.json`` and writes one line per seed plus the mean, min and max of the held-out AUC and
accuracy, and the smallest lower 95 % bound of the AUC (how far above chance the worst seed stays)::

    python benchmarks/seed_spread.py --row abaf --workdirs /tmp/fcr /tmp/fcr_s1 /tmp/fcr_s2 \\
        --append benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_file import recorded_command, report, with_interval  # noqa: E402


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", required=True, help="row of fusion_classification_results.py, e.g. abaf")
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


def table(row: str, measured: list[tuple[str, dict]]) -> list[str]:
    lines = [f"### Seed spread of the '{row}' row, {datetime.date.today()}, CPU (2 cores), torch {torch.__version__}",
             "", f"`{recorded_command(__file__)}`", "",
             "Each seed is a separate run of `fusion_classification_results.py --seed S` (a new synthetic dataset and "
             "a new training); the command that measured it is listed per line.", "",
             "| run | AUC | accuracy | predicted per class | measured by |", "| --- | --- | --- | --- | --- |"]
    for workdir, m in measured:
        lines.append(f"| {workdir} | {with_interval(m, 'auc')} | {with_interval(m, 'accuracy')} | "
                     f"{m['predicted_class_counts']} | `{m.get('command', 'not recorded')}` |")
    aucs = [m["auc"] for _, m in measured]
    accuracies = [m["accuracy"] for _, m in measured]
    lowest_bound = min(m["intervals"]["auc"]["low"] for _, m in measured)
    lines += ["", f"AUC mean {sum(aucs) / len(aucs):.3f} (min {min(aucs):.3f}, max {max(aucs):.3f}); accuracy mean "
              f"{sum(accuracies) / len(accuracies):.3f} (min {min(accuracies):.3f}, max {max(accuracies):.3f}); "
              f"smallest lower 95 % bound of the AUC over the seeds: {lowest_bound:.3f} (chance: 0.5)."]
    return lines


def main() -> None:
    args = arguments()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report(table(args.row, row_results(args.workdirs, args.row)), args.append)


if __name__ == "__main__":
    main()
