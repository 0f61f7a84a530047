"""How far ABAF's phase weights collapse onto one phase per case, read from ``predict-cls`` outputs.

For each ``classification.csv`` with ``beta_<phase>`` columns: the median over cases of a case's largest weight and
the share of cases whose largest weight exceeds 0.9 (:func:`results_file.beta_concentration`; issue 32 measured 0.96
and 63 % on its independent holdout), the mean weight per phase and how many cases give each phase their largest
weight.
"""

import argparse
import csv
import logging
import os
import sys
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_file import beta_concentration, recorded_command, report


def phase_weights(csv_file: str) -> tuple[list, list]:
    """``(phase names, (N, P) weights)`` of the ``beta_<phase>`` columns of a predictions CSV."""
    with open(csv_file) as f:
        header, *rows = list(csv.reader(f))
    columns = [i for i, h in enumerate(header) if h.startswith("beta_")]
    if not columns:
        raise SystemExit(f"{csv_file}: no beta_<phase> columns (not an ABAF model's predictions)")
    return [header[i][5:] for i in columns], [[float(r[i]) for i in columns] for r in rows]


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv_files", nargs="+", help="predict-cls classification.csv files of ABAF models")
    parser.add_argument("--append", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    lines = ["### ABAF phase-weight collapse", "", f"`{recorded_command(__file__, argv)}`", "",
             "| predictions | cases | a case's largest beta: median | cases with largest beta > 0.9 | mean beta | "
             "cases whose largest beta is on each phase |", "| --- | --- | --- | --- | --- | --- |"]
    for csv_file in args.csv_files:
        phases, weights = phase_weights(csv_file)
        c = beta_concentration(weights)
        mean = ", ".join(f"{p} {sum(w[i] for w in weights) / len(weights):.2f}" for i, p in enumerate(phases))
        argmax = [max(range(len(phases)), key=w.__getitem__) for w in weights]
        counts = ", ".join(f"{p} {argmax.count(i)}" for i, p in enumerate(phases))
        lines.append(f"| {csv_file} | {len(weights)} | {c['median_largest']:.2f} | "
                     f"{100 * c['share_above_0.9']:.0f} % | {mean} | {counts} |")
    report(lines, args.append)


if __name__ == "__main__":
    main()
