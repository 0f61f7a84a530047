"""Shared by the benchmark scripts: log a markdown table and optionally append it to RESULTS.md; keep a work folder's
``results.json``."""

import fcntl
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence

logger = logging.getLogger("benchmarks")


def report(lines: Sequence[str], append: Optional[str]) -> None:
    """Log the table made of ``lines``; append it to ``append`` (a markdown file) when given."""
    table = "\n".join(lines) + "\n"
    logger.info("%s", table)
    if append:
        with open(append, "a") as f:
            f.write("\n" + table)


def recorded_command(script_file: str, argv: Optional[Sequence[str]] = None) -> str:
    """The command that reproduces this run, from the repository root: ``python benchmarks/SCRIPT.py ARGS``."""
    import os
    import shlex
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.relpath(os.path.abspath(script_file), root)
    return shlex.join(["python", script, *(sys.argv[1:] if argv is None else argv)])


def device_description(device) -> str:
    """The GPU's name, or the CPU's model name and the number of threads torch uses."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "CPU")
    except OSError:
        pass
    threads = torch.get_num_threads()
    return f"{model}, {threads} thread{'' if threads == 1 else 's'}"


def pipeline_arguments(description: str, num_train: int, num_test: int, shape: tuple):
    """The options shared by the scripts that run nnU-Net's whole pipeline on the synthetic dataset."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=250)
    parser.add_argument("--num-train", type=int, default=num_train)
    parser.add_argument("--num-test", type=int, default=num_test)
    parser.add_argument("--shape", type=int, nargs=3, default=shape)
    parser.add_argument("--smoke", action="store_true", help="tiny configuration, a few iterations, on the CPU")
    parser.add_argument("--force", action="store_true", help="replace an earlier run in --workdir")
    parser.add_argument("--append", default=None, help="append the table to this markdown file")
    return parser


def pipeline_workspace(args) -> tuple:
    """``(workdir, env, logs)``: a fresh demo-style work directory with nnU-Net's folders and a log folder."""
    import os

    from nnunet_mvext.pipeline import claim_output, nnunet_environment, prepare_workdir

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    workdir = os.path.abspath(args.workdir)
    prepare_workdir(workdir, args.force, owner="a benchmark script")
    env = nnunet_environment(workdir, args.device)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        claim_output(workdir, name)
    logs = claim_output(workdir, "logs")
    os.makedirs(logs)
    return workdir, env, logs


def held_out_metrics(out: str, labels_ts: str, env: dict, log_file: str) -> dict:
    """``evaluate-cls`` of ``out/classification.csv`` against ``labels_ts/classification.csv`` (held-out cases), plus
    what the benchmark tables show from the CSV: macro-F1, the confusion matrix, predictions per class, mean beta."""
    import csv
    import json
    import os

    from sklearn.metrics import confusion_matrix, f1_score

    from nnunet_mvext.pipeline import console_script, run_console_script

    run_console_script([console_script("nnunet-mvext"), "evaluate-cls", "-ref",
                        os.path.join(labels_ts, "classification.csv"), "-pred", os.path.join(out, "classification.csv"),
                        "-o", os.path.join(out, "eval")], env, log_file)
    with open(os.path.join(out, "eval", "classification_metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(out, "classification.csv")) as f:
        header, *rows = list(csv.reader(f))
    with open(os.path.join(labels_ts, "classification.csv")) as f:
        truth = {r[0]: int(r[1]) for r in list(csv.reader(f))[1:]}
    names = metrics["class_names"]
    y, predicted = [truth[r[0]] for r in rows], [names.index(r[1]) for r in rows]
    labels = list(range(len(names)))
    # over the classes present in the reference or the predictions, as evaluate-cls (and LLD-MMRI) count it
    present = sorted(set(y) | set(predicted))
    metrics["macro_f1"] = float(f1_score(y, predicted, average="macro", labels=present, zero_division=0))
    metrics["confusion"] = confusion_matrix(y, predicted, labels=labels).tolist()
    metrics["predicted_class_counts"] = {n: predicted.count(i) for i, n in enumerate(names)}
    beta = [i for i, h in enumerate(header) if h.startswith("beta_")]
    metrics["mean_beta"] = {header[i][5:]: sum(float(r[i]) for r in rows) / len(rows) for i in beta}
    metrics["beta_concentration"] = beta_concentration([[float(r[i]) for i in beta] for r in rows] if beta else [])
    return metrics


def beta_concentration(betas: list) -> dict:
    """How far ABAF's phase weights collapse onto one phase per case: ``(N, P)`` weights (each row sums to 1) ->
    the median over cases of the largest weight of a case and the share of cases whose largest weight exceeds 0.9
    (1/P and 0 for uniform weights, 1 and 1 when every case reads one phase). ``{}`` without weights."""
    import numpy as np

    if not betas:
        return {}
    largest = np.asarray(betas, dtype=float).max(1)
    return {"median_largest": float(np.median(largest)), "share_above_0.9": float(np.mean(largest > 0.9))}


def with_interval(metrics: dict, key: str) -> str:
    """``value [low, high]`` of a metric of :func:`held_out_metrics`, or ``n/a`` when undefined."""
    value = metrics.get(key)
    if value is None:
        return "n/a"
    ci = metrics.get("intervals", {}).get(key, {})
    return f"{value:.3f}" if ci.get("low") is None else f"{value:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def measured_by(results: dict, rows, this_command: str) -> list[str]:
    """Lines naming the runs that measured the rows (each row's ``command`` in ``results``), where an earlier run in
    the work folder (``--resume``) did; nothing when this command measured them all."""
    commands = {}
    for row in rows:
        if row in results:
            commands.setdefault(results[row].get("command"), []).append(row)
    if set(commands) <= {this_command}:
        return []
    return [f"Rows measured by `{c}`: {', '.join(r)}" if c else
            f"Rows measured by an earlier run that did not record its command: {', '.join(r)}"
            for c, r in commands.items()] + [""]


def write_results(results_file: str, rows: dict) -> dict:
    """Merge ``rows`` (the rows this run measured or changed) into the file and return every row it holds then.

    A second run on the same work folder (``--resume`` with other rows) keeps its rows: the read-merge-write holds
    an exclusive lock (``fcntl.flock`` on ``results_file + ".lock"``) and replaces the file through a temporary file
    of its own, so neither run loses or truncates the other's rows."""
    with open(results_file + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = json.loads(Path(results_file).read_text()) if os.path.isfile(results_file) else {}
        merged.update(rows)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(results_file)), suffix=".json.tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(merged, f, indent=1)
        os.replace(tmp, results_file)
    return merged
