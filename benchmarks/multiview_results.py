"""Multi-view (2.5D) classification on held-out shape cases: three-view fusion vs each single view vs 3D.

Everything goes through nnU-Net's CLI as a user runs it: ``nnUNetv2_plan_and_preprocess`` -> ``add-config`` ->
``nnUNetv2_train … 0`` (fold 0 of the training cases) -> ``nnunet-mvext predict-cls --roi labelsTs`` on ``imagesTs``
(held-out cases never used for training or model selection; ``checkpoint_final.pth``; the held-out lesion masks
localise, as the multi-view models have no decoder) -> ``nnunet-mvext evaluate-cls`` (95 % bootstrap intervals).

Data: :func:`nnunet_mvext.synthetic.shapes.generate_shape_dataset`, one channel, four classes (a round lesion
or a spike along axis 0, 1 or 2); view a cannot tell ``round`` from ``spike_axis{a}``, so a single view is capped at
75 % accuracy (balanced classes) while two or three views, and the 3D network, can reach 100 %.

Rows (``--rows``): ``views_<head>`` (``nnUNetTrainerMultiView<Head>``, all three views), ``view_<v>``
(``nnUNetTrainerMultiViewConcat`` with ``views: [v]``), ``views_concat_slices3`` (``view_slices: 3``), ``3d``
(``nnUNetTrainerFusionConcat``, classification only like the views: ``segmentation: false``, the 3D single-encoder
classifier of the fusion trainers). Same tiny plan (3 stages, 8/16/32 features, patch 32^3), epochs, iterations,
optimizer and seed for every row. Results are kept in
``WORKDIR/results.json``; ``--resume`` continues in the same work folder, so the table can be completed row by row.

CPU run (about 1 minute per row on 2 cores at the default 200 iterations)::

    python benchmarks/multiview_results.py --workdir /tmp/mvr --append benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.pipeline import (
    claim_output,
    console_script,
    nnunet_environment,
    nnunet_paths,
    prepare_workdir,
    run_console_script,
)
from nnunet_mvext.planning.plans_config import add_configuration
from nnunet_mvext.synthetic.shapes import SHAPE_CLASSES, generate_shape_dataset
from results_file import held_out_metrics, measured_by, recorded_command, report, with_interval, write_results

logger = logging.getLogger("multiview_results")
DATASET_ID = 520
HEADS = {"concat": "Concat", "dsn": "DSN", "abaf": "ABAF", "decision": "Decision"}
VIEWS = ("axial", "coronal", "sagittal")


def rows() -> dict:
    """``{row: (trainer, configuration, extra trainer_settings)}``."""
    out = {f"views_{h}": (f"nnUNetTrainerMultiView{name}", "3d_views", {}) for h, name in HEADS.items()}
    out.update({f"view_{v}": ("nnUNetTrainerMultiViewConcat", f"3d_view_{v}", {"views": [v]}) for v in VIEWS})
    out["views_concat_slices3"] = ("nnUNetTrainerMultiViewConcat", "3d_views_s3", {"view_slices": 3})
    out["3d"] = ("nnUNetTrainerFusionConcat", "3d_3d", {"segmentation": False})
    return out


#: GNU time around nnUNetv2_train: its peak resident memory (main process; the loader workers are separate processes)
PEAK_RSS = ["/usr/bin/time", "-f", "peak_rss_kib %M"] if os.path.isfile("/usr/bin/time") else []

#: rows run without --rows (DSN, decision and 3-plane slabs on request)
DEFAULT_ROWS = ("views_concat", "views_abaf", "view_axial", "view_coronal", "view_sagittal", "3d")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--num-train", type=int, default=40)
    parser.add_argument("--num-test", type=int, default=64)
    parser.add_argument("--shape", type=int, nargs=3, default=(32, 32, 32))
    parser.add_argument("--seed", type=int, default=0, help="trainer_settings seed and dataset seed")
    parser.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS),
                        help=f"rows to run (default: {' '.join(DEFAULT_ROWS)}); all: {' '.join(rows())}")
    parser.add_argument("--resume", action="store_true", help="continue an earlier run in --workdir")
    parser.add_argument("--force", action="store_true", help="replace an earlier run in --workdir")
    parser.add_argument("--append", default=None, help="append the table to this markdown file")
    return parser.parse_args()


def dataset_in(args, env: dict, logs: str):
    name = f"Dataset{DATASET_ID:03d}_MVExtShapes"
    folder = os.path.join(env["nnUNet_raw"], name)
    if os.path.isdir(folder):
        from nnunet_mvext.synthetic.dataset_folder import SyntheticDataset

        with open(os.path.join(folder, "cases.json")) as f:
            cases = json.load(f)
        return SyntheticDataset(name, folder, tuple(cases["Tr"]), tuple(cases["Ts"]), ("T2",), SHAPE_CLASSES)
    dataset = generate_shape_dataset(env["nnUNet_raw"], dataset_id=DATASET_ID, num_train=args.num_train,
                                     num_test=args.num_test, shape=args.shape, seed=args.seed)
    run_console_script([console_script("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "3d_fullres",
                        "-np", env["nnUNet_def_n_proc"]], env, os.path.join(logs, "plan.log"))
    return dataset


def main() -> None:
    args = arguments()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    workdir = os.path.abspath(args.workdir)
    env = nnunet_environment(workdir, "cpu")
    results_file = os.path.join(workdir, "results.json")
    if not args.resume:
        prepare_workdir(workdir, args.force, owner="a benchmark script")
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "logs", "results.json"):
            claim_output(workdir, name)
        os.makedirs(os.path.join(workdir, "logs"))
    logs = os.path.join(workdir, "logs")
    results = json.loads(Path(results_file).read_text()) if os.path.isfile(results_file) else {}
    dataset = dataset_in(args, env, logs)
    settings = {"num_epochs": args.epochs, "num_iterations_per_epoch": args.iterations,
                "num_val_iterations_per_epoch": 4, "optimizer": "adan", "initial_lr": 3e-3, "seed": args.seed,
                "save_every": max(1, args.epochs // 2), "validation_mirroring": False}
    table_rows = rows()
    selected = args.rows
    unknown = [r for r in selected if r not in table_rows]
    if unknown:
        raise SystemExit(f"unknown --rows {unknown}; allowed: {', '.join(table_rows)}")
    for row in selected:
        if row in results:
            logger.info("%s: measured earlier, kept", row)
            continue
        trainer, configuration, extra = table_rows[row]
        with nnunet_paths(env):
            try:
                add_configuration(str(DATASET_ID), "3d_tiny_cpu", name=configuration,
                                  extra_trainer_settings={**settings, **extra})
            except MVExtError as e:  # the view heads share 3d_views: added by an earlier row
                if "already exists" not in str(e):
                    raise
        start = time.time()
        train_log = os.path.join(logs, f"train_{row}.log")
        run_console_script(PEAK_RSS + [console_script("nnUNetv2_train"), str(DATASET_ID), configuration, "0", "-tr",
                                       trainer, "-device", "cpu"], env, train_log)
        train_seconds = time.time() - start
        out = claim_output(workdir, f"pred_{row}")
        run_console_script([console_script("nnunet-mvext"), "predict-cls", "-i", dataset.images_ts, "-o", out, "-d",
                            str(DATASET_ID), "-c", configuration, "-f", "0", "-tr", trainer, "-device", "cpu",
                            "--disable_tta", "--roi", dataset.labels_ts], env, os.path.join(logs, f"predict_{row}.log"))
        folder = os.path.join(env["nnUNet_results"], dataset.dataset_name, f"{trainer}__nnUNetPlans__{configuration}")
        epoch_seconds = epoch_times(os.path.join(folder, "fold_0"))
        metrics = held_out_metrics(out, dataset.labels_ts, env, os.path.join(logs, f"evaluate_{row}.log"))
        results[row] = {**metrics, "train_seconds": train_seconds, "peak_rss_mib": peak_rss_mib(train_log),
                        "epoch_seconds": epoch_seconds, "trainer": trainer, "settings": extra,
                        "command": recorded_command(__file__)}
        results.update(write_results(results_file, {row: results[row]}))
        logger.info("%s: accuracy %s, AUC %s", row, with_interval(results[row], "accuracy"),
                    with_interval(results[row], "auc"))
    report(table(args, dataset, results, table_rows), args.append)


def peak_rss_mib(log_file: str) -> float:
    """Peak resident memory of the ``nnUNetv2_train`` process as GNU time reported it in ``log_file`` (MiB)."""
    import re

    with open(log_file) as f:
        found = re.findall(r"^peak_rss_kib (\d+)$", f.read(), flags=re.M)
    return int(found[-1]) / 1024 if found else float("nan")


def epoch_times(fold_folder: str) -> float:
    """Median 'Epoch time' of the training log."""
    import glob
    import re

    log = Path(sorted(glob.glob(os.path.join(fold_folder, "training_log_*.txt")))[-1]).read_text()
    times = sorted(float(t) for t in re.findall(r"Epoch time: ([0-9.]+) s", log))
    return times[len(times) // 2] if times else float("nan")


def table(args, dataset, results: dict, table_rows: dict) -> list[str]:
    lines = [f"### Multi-view (2.5D) classification, shape data, {datetime.date.today()}, CPU (2 cores), "
             f"torch {torch.__version__}", "", f"`{recorded_command(__file__)}`", "",
             *measured_by(results, table_rows, recorded_command(__file__)),
             f"One channel, 4 classes ({', '.join(SHAPE_CLASSES)}; a single view cannot tell round from the spike "
             f"along its own axis: at most 0.75 accuracy), {len(dataset.train_cases)} training cases (fold 0: 80 % "
             f"train, 20 % validation), {len(dataset.test_cases)} held-out cases; 3-stage 8/16/32 plan, patch 32^3, "
             f"{args.epochs} epochs x {args.iterations} iterations, Adan 3e-3, seed {args.seed}; checkpoint_final.pth; "
             f"predict-cls --roi labelsTs --disable_tta. 95 % intervals: stratified bootstrap. One training per row: "
             f"differences inside the intervals are not differences. s/epoch: median of nnU-Net's 'Epoch time'; peak "
             f"RSS: the nnUNetv2_train process (GNU time; CPU memory, not GPU memory).", "",
             "| model | accuracy | AUC (macro OvR) | Cohen's kappa | confusion (rows: true) | mean beta | s/epoch | "
             "train s | peak RSS MiB |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row, (trainer, _, extra) in table_rows.items():
        label = f"{trainer}" + (f" views {extra['views']}" if "views" in extra else
                                " (3D, segmentation false)" if row == "3d" else
                                f" (3 views, {extra.get('view_slices', 1)} plane(s) each)")
        if row not in results:
            continue
        m = results[row]
        beta = ", ".join(f"{k} {v:.2f}" for k, v in m["mean_beta"].items()) or "-"
        lines.append(f"| {label} | {with_interval(m, 'accuracy')} | {with_interval(m, 'auc')} | "
                     f"{with_interval(m, 'cohen_kappa')} | "
                     f"{m['confusion']} | {beta} | {m['epoch_seconds']:.1f} | {m['train_seconds']:.0f} | "
                     f"{m.get('peak_rss_mib', float('nan')):.0f} |")
    return lines


if __name__ == "__main__":
    main()
