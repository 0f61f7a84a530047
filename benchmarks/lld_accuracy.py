"""LLD-MMRI on a mock release: held-out accuracy per patient of the imports of ``import-lld`` (alignments, geometry
from the JSON or the headers, whole volumes or the official crops) and of shared against separate phase encoders,
with early fusion as the baseline.

One mock release made as the real one is (``make-lld-mock``: ``--patients`` patients, eight series each on its own
anisotropic grid whose geometry is only in ``Annotation.json``, every phase shifted by up to ``--misregistration-mm``
per axis, box bounds jittered by up to ``--box-jitter-mm``, 30 % of the patients with 2-3 lesions,
``--unreleased-fraction`` unreleased, the three defects, a flipped patient (passed to the imports by
``--flipped-patients``), repeated slices, the official crops and folds; no test set) is imported as the selected rows
need (:data:`DATASETS`): ``crop`` and ``resample`` with ``--geometry json``, ``crop_header`` with ``--geometry header``
and ``crops_only`` with ``--from-crops``. The unreleased patients (category -1, so in ``imagesTs``) are the held-out
set, the same patients for every import, as the challenge's test patients are: never used for training or model
selection; their true classes come from the mock's ``mock_truth.json``. Each dataset goes through nnU-Net as a user runs
it: ``nnUNetv2_plan_and_preprocess -c 3d_fullres`` (which copies the official folds the import wrote; ``make-splits
--groups`` where a dataset has none) → ``add-config`` (the tiny CPU network, ``segmentation: false``, ``missing_phases:
zero``, as ``3d_fullres_lld`` in docs/how_to/lld_mmri.md) → ``nnUNetv2_train … 0`` → ``predict-cls --roi labelsTs
--disable_tta`` (the given boxes, as the challenge's protocol) → ``export-lld --lesions lesions.csv`` (one prediction
per patient: a patient's lesion cases averaged by box volume) → ``evaluate-cls`` per patient (95 % intervals by
stratified bootstrap; the challenge's score, the mean of macro-F1 and Cohen's kappa, with its interval).

Rows: ``crop`` and ``resample`` (``nnUNetTrainerFusionABAF``, one encoder per phase), ``crop_shared`` (the same with
``shared_encoder: true``), ``crop_early`` (early fusion: ``nnUNetTrainerFusionConcat`` with one phase group holding
all eight channels), ``crop_header_shared`` and ``crops_only_shared`` (``crop_shared`` on the header-geometry and
the crops-only imports). ``--rows`` runs a subset; results are kept in ``WORKDIR/results.json`` and ``--resume``
continues an earlier run (the table holds every row measured so far)::

    python benchmarks/lld_accuracy.py --workdir /tmp/lldacc --patients 200 --unreleased-fraction 0.4 --epochs 15 \\
        --iterations 40 --rows crop_shared crop_header_shared crops_only_shared --append benchmarks/RESULTS.md

The held-out cases of ``crop`` are also written as ``WORKDIR/heldout_crop`` (labels and a per-case
``classification.csv``) for ``benchmarks/missing_phase_results.py``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.lld_mmri.annotation import CLASS_NAMES
from nnunet_mvext.lld_mmri.import_release import LESIONS, import_release
from nnunet_mvext.lld_mmri.mock_release import generate_mock_release
from nnunet_mvext.pipeline import (
    claim_output,
    console_script,
    nnunet_environment,
    nnunet_paths,
    prepare_workdir,
    run_console_script,
)
from nnunet_mvext.planning.plans_config import add_configuration
from results_file import held_out_metrics, measured_by, recorded_command, report, with_interval, write_results

logger = logging.getLogger("lld_accuracy")
ALIGNMENTS = ("crop", "resample")
#: the imports a row can train on: key -> (alignment, --geometry, --from-crops); a dataset's id is --dataset-id plus
#: the key's index here
DATASETS = {"crop": ("crop", "json", False), "resample": ("resample", "json", False),
            "crop_header": ("crop", "header", False), "crops_only": ("crop", "json", True)}
ABAF, CONCAT = "nnUNetTrainerFusionABAF", "nnUNetTrainerFusionConcat"
#: row: (dataset key, trainer, extra trainer_settings, label)
#: (shared_encoder explicit: with segmentation false the trainers' default became the shared encoder, and these rows
#: keep measuring what they measured before)
ROWS = {"crop": ("crop", ABAF, {"shared_encoder": False}, "ABAF, one encoder per phase"),
        "resample": ("resample", ABAF, {"shared_encoder": False}, "ABAF, one encoder per phase"),
        "crop_shared": ("crop", ABAF, {"shared_encoder": True}, "ABAF, one encoder shared by the phases"),
        "crop_early": ("crop", CONCAT, {"phase_channels": [list(range(8))]},
                       "early fusion (one encoder, the eight phases as channels)"),
        "crop_header_shared": ("crop_header", ABAF, {"shared_encoder": True},
                               "ABAF, shared encoder, --geometry header (the headers' 1 mm voxels)"),
        "crops_only_shared": ("crops_only", ABAF, {"shared_encoder": True},
                              "ABAF, shared encoder, --from-crops (the official crops)")}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0, help="mock release seed and trainer_settings seed")
    parser.add_argument("--misregistration-mm", type=float, default=6.0)
    parser.add_argument("--box-jitter-mm", type=float, default=3.0)
    parser.add_argument("--unreleased-fraction", type=float, default=0.2,
                        help="patients held out (category -1, imagesTs; default: %(default)s)")
    parser.add_argument("--dataset-id", type=int, default=820, help="id of the crop dataset; the other imports "
                                                                    "(resample, crop_header, crops_only) the next ones")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--rows", nargs="+", default=None, help=f"subset of: {' '.join(ROWS)} (default: all)")
    parser.add_argument("--resume", action="store_true", help="continue an earlier run in --workdir")
    parser.add_argument("--force", action="store_true", help="replace an earlier run in --workdir")
    parser.add_argument("--append", default=None, help="append the table to this markdown file")
    return parser.parse_args()


def write_csv(path: str, header, rows) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def prepare(args, workdir: str, env: dict, logs: str, keys: list[str]) -> dict:
    """Mock release (made as the real one is, no test set), the imports of ``keys`` (:data:`DATASETS`, those the
    selected rows use), planning, preprocessing and splits (the release's official folds, which the import writes;
    ``make-splits --groups`` where there are none); ``{key: dataset}`` (kept in ``WORKDIR/datasets.json`` for
    ``--resume``)."""
    from nnunet_mvext.lld_mmri.import_crops import import_crops

    record = os.path.join(workdir, "datasets.json")
    if os.path.isfile(record):
        return json.loads(Path(record).read_text())
    release = claim_output(workdir, "release")
    mock = generate_mock_release(release, args.patients, args.seed, misregistration_mm=args.misregistration_mm,
                                 box_jitter_mm=args.box_jitter_mm, unreleased_fraction=args.unreleased_fraction,
                                 test_fraction=0)
    flipped = os.path.join(release, "flipped_patients.txt")
    Path(flipped).write_text("\n".join(mock.truth()["quirks"]["flipped_patients"]) + "\n")
    datasets = {}
    for offset, (key, (alignment, geometry, from_crops)) in enumerate(DATASETS.items()):
        if key not in keys:
            continue
        start = time.perf_counter()
        result = (import_crops if from_crops else import_release)(
            release, args.dataset_id + offset, name=f"LLD_{key}", raw_folder=env["nnUNet_raw"], alignment=alignment,
            num_processes=1, geometry=geometry, flipped_patients=flipped)
        datasets[key] = {"id": args.dataset_id + offset, "name": result.dataset_name, "folder": result.folder,
                         "train_cases": len(result.train_cases), "test_cases": len(result.test_cases),
                         "import_seconds": time.perf_counter() - start, "alignment": alignment,
                         "geometry": geometry, "from_crops": from_crops}
    log_file = os.path.join(logs, "prepare.log")
    run_console_script([console_script("nnUNetv2_plan_and_preprocess"), "-d",
                        *(str(d["id"]) for d in datasets.values()), "-c", "3d_fullres",
                        "--verify_dataset_integrity"], env, log_file)
    for d in datasets.values():
        if not os.path.isfile(os.path.join(d["folder"], "splits_final.json")):
            run_console_script([console_script("nnunet-mvext"), "make-splits", d["name"], "--groups",
                                os.path.join(d["folder"], "groups.csv")], env, log_file)
    with open(record, "w") as f:
        json.dump({**datasets, "truth_file": mock.truth_file}, f, indent=1)
    return json.loads(Path(record).read_text())


def write_heldout_cases(dataset: dict, truth: dict, out: str) -> None:
    """The held-out cases' labels (links) and their classes, per case, for ``missing_phase_results.py``."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(dataset["folder"], LESIONS), newline="") as f:
        cases = [(r["case_id"], r["patient"]) for r in csv.DictReader(f) if r["split"] != "train"]
    labels_ts = os.path.join(dataset["folder"], "labelsTs")
    for name in os.listdir(labels_ts):
        if name.endswith(".nii.gz") and not os.path.exists(os.path.join(out, name)):
            os.symlink(os.path.join(labels_ts, name), os.path.join(out, name))
    write_csv(os.path.join(out, "classification.csv"), ("case_id", "class"),
              [(c, truth["patients"][p]["class"]) for c, p in cases])


def per_patient(pred: str, dataset: dict, truth: dict, env: dict, logs: str, key: str) -> dict:
    """``export-lld`` of a row's case predictions, then ``evaluate-cls`` of the patients against the mock's truth."""
    team = os.path.join(pred, "team.json")
    run_console_script([console_script("nnunet-mvext"), "export-lld", os.path.join(pred, "classification.csv"),
                        "-o", team, "--lesions", os.path.join(dataset["folder"], LESIONS), "--overwrite"], env,
                       os.path.join(logs, f"export_{key}.log"))
    entries = json.loads(Path(team).read_text())
    patients = os.path.join(pred, "patients")
    reference = os.path.join(pred, "patients_reference")
    write_csv(os.path.join(patients, "classification.csv"),
              ["case_id", "predicted_class", *(f"p_{n}" for n in CLASS_NAMES)],
              [(e["image_id"], CLASS_NAMES[e["prediction"]], *(f"{s:.6f}" for s in e["score"])) for e in entries])
    shutil.copy(os.path.join(pred, "dataset.json"), os.path.join(patients, "dataset.json"))
    write_csv(os.path.join(reference, "classification.csv"), ("case_id", "class"),
              [(e["image_id"], truth["patients"][e["image_id"]]["class"]) for e in entries])
    return held_out_metrics(patients, reference, env, os.path.join(logs, f"evaluate_{key}.log"))


def run_row(row: str, args, datasets: dict, truth: dict, env: dict, workdir: str, logs: str) -> dict:
    key, trainer, _, _ = ROWS[row]
    dataset = datasets[key]
    configuration = f"3d_lld_{row}"
    start = time.time()
    run_console_script([console_script("nnUNetv2_train"), str(dataset["id"]), configuration, "0", "-tr", trainer,
                        "-device", args.device], env, os.path.join(logs, f"train_{row}.log"))
    train_seconds = time.time() - start
    pred = os.path.join(workdir, f"pred_{row}")
    run_console_script([console_script("nnunet-mvext"), "predict-cls", "-i", os.path.join(dataset["folder"],
                                                                                          "imagesTs"),
                        "-o", pred, "-d", str(dataset["id"]), "-c", configuration, "-f", "0", "-tr", trainer,
                        "-device", args.device, "--roi", os.path.join(dataset["folder"], "labelsTs")]
                       + ([] if args.device == "cuda" else ["--disable_tta"]), env,
                       os.path.join(logs, f"predict_{row}.log"))
    return {**per_patient(pred, dataset, truth, env, logs, row), "train_seconds": train_seconds,
            "command": recorded_command(__file__), "held_out_cases": dataset["test_cases"]}


def table(args, datasets: dict, results: dict) -> list[str]:
    d = datasets
    lines = [f"### LLD-MMRI mock release: alignment and encoders, {datetime.date.today()}, "
             f"{'CPU (%d cores)' % os.cpu_count() if args.device == 'cpu' else torch.cuda.get_device_name(0)}, "
             f"torch {torch.__version__}", "", f"`{recorded_command(__file__)}`", ""]
    lines += measured_by(results, [r for r in ROWS if r in results], recorded_command(__file__))
    cases = "; ".join(f"{k}: {d[k]['test_cases']} held-out {'patient' if k == 'resample' else 'lesion'} cases, "
                      f"{d[k]['train_cases']} training cases" for k in DATASETS if k in d)
    lines += [f"{args.patients} patients (seed {args.seed}), a mock made as the real release (geometry only in "
              f"Annotation.json, in-plane 0.6-1.6 mm, slices 2-8 mm, a flipped patient passed by "
              f"--flipped-patients), misregistration up to {args.misregistration_mm:g} mm per "
              f"axis per phase, box jitter up to {args.box_jitter_mm:g} mm; held out: the unreleased patients "
              f"({cases}; fold 0 of 5 by patient). 3-stage 8/16/32 network, patch 32^3, segmentation false, "
              f"missing_phases zero, "
              f"{args.epochs} epochs x {args.iterations} iterations, Adan 3e-3; checkpoint_final.pth; predict-cls "
              f"--roi labelsTs --disable_tta; one prediction per patient (export-lld, lesions averaged by box "
              f"volume). 95 % intervals: stratified bootstrap over patients. One training per row: differences "
              f"inside the intervals are not differences.", "",
              "| row | alignment | model | patients | macro AUC | balanced accuracy | macro-F1 | Cohen's kappa | "
              "challenge score (F1 + kappa) / 2 | classes never predicted | train s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row, (key, _, _, label) in ROWS.items():
        if row not in results:
            continue
        alignment = DATASETS[key][0]
        m = results[row]
        never = [n for n, c in m["predicted_class_counts"].items() if c == 0]
        never_text = f"{len(never)}" + (f" ({', '.join(never)})" if never else "")
        lines.append(f"| {row} | {alignment} | {label} | {m['num_cases']} | {with_interval(m, 'auc')} | "
                     f"{with_interval(m, 'balanced_accuracy')} | {m['macro_f1']:.3f} | "
                     f"{with_interval(m, 'cohen_kappa')} | {with_interval(m, 'lld_mmri_score')} | {never_text} | "
                     f"{m['train_seconds']:.0f} |")
    lines += ["", "Import: " + ", ".join(f"{k} {d[k]['import_seconds']:.0f} s" for k in DATASETS if k in d)
              + " (one process)."]
    return lines


def main() -> None:
    args = arguments()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    selected = args.rows or list(ROWS)
    unknown = [r for r in selected if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown --rows {unknown}; allowed: {', '.join(ROWS)}")
    workdir = os.path.abspath(args.workdir)
    env = nnunet_environment(workdir, args.device)
    if not args.resume:
        prepare_workdir(workdir, args.force, owner="benchmarks/lld_accuracy.py")
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "logs", "results.json"):
            claim_output(workdir, name)
    logs = os.path.join(workdir, "logs")
    os.makedirs(logs, exist_ok=True)
    results_file = os.path.join(workdir, "results.json")
    results = json.loads(Path(results_file).read_text()) if os.path.isfile(results_file) else {}
    datasets = prepare(args, workdir, env, logs, [k for k in DATASETS if any(ROWS[r][0] == k for r in selected)])
    missing = sorted({ROWS[r][0] for r in selected} - set(datasets))
    if missing:
        raise SystemExit(f"--rows {' '.join(selected)} need the {' and '.join(missing)} import, which this --resume "
                         f"workdir's datasets.json lacks; run them in a new --workdir")
    truth = json.loads(Path(datasets["truth_file"]).read_text())
    if "crop" in datasets:
        write_heldout_cases(datasets["crop"], truth, os.path.join(workdir, "heldout_crop"))
    settings = {"num_epochs": args.epochs, "num_iterations_per_epoch": args.iterations,
                "num_val_iterations_per_epoch": 4, "optimizer": "adan", "initial_lr": 3e-3, "seed": args.seed,
                "segmentation": False, "missing_phases": "zero", "save_every": max(1, args.epochs // 2),
                "validation_mirroring": args.device == "cuda"}
    with nnunet_paths(env):
        for row in selected:
            key, _, extra, _ = ROWS[row]
            try:
                add_configuration(str(datasets[key]["id"]), "3d_tiny_cpu", name=f"3d_lld_{row}",
                                  extra_trainer_settings={**settings, **extra})
            except MVExtError as e:  # added by an earlier (--resume) run
                if "already exists" not in str(e):
                    raise
    for row in selected:
        if row in results:
            logger.info("%s: measured earlier, kept", row)
            continue
        try:
            results[row] = run_row(row, args, datasets, truth, env, workdir, logs)
        except Exception as e:  # one failed row must not lose the others; its log names the cause
            logger.error("%s failed: %s", row, e)
            continue
        results.update(write_results(results_file, {row: results[row]}))
        logger.info("%s: macro-F1 %.3f, challenge score %s", row, results[row]["macro_f1"],
                    results[row]["lld_mmri_score"])
    report(table(args, datasets, results), args.append)


if __name__ == "__main__":
    main()
