"""Multi-phase classification on held-out cases: fusion heads vs early fusion vs every single phase.

Everything goes through nnU-Net's CLI as a user runs it: ``nnUNetv2_plan_and_preprocess`` → ``add-config`` →
``nnUNetv2_train … 0`` (fold 0 of the training cases) → ``nnunet-mvext predict-cls`` on ``imagesTs`` (held-out cases
never used for training or model selection; ``checkpoint_final.pth``) → ``nnunet-mvext evaluate-cls`` (95 %
intervals: DeLong for a binary AUC, stratified bootstrap otherwise).

Data (``--data``):

- ``binary``: 3 phases, misregistered by up to ``--misregistration`` voxels, class = the lesion's enhancement change
  between phases (:mod:`nnunet_mvext.synthetic.multiphase`, binary mode);
- ``multiclass``: 7 classes (enhancement patterns), 8 phases, lesion labels as filled boxes, misregistered; the
  held-out split holds every class;
- ``lesion-types``: the second generator, designed independently of the first
  (:mod:`nnunet_mvext.synthetic.lesion_types`): the seven LLD-MMRI lesion types by their textbook features over the
  eight LLD-MMRI series, jittered boxes, misregistered by up to ``--misregistration`` voxels, its HCC-heavy priors
  unless ``--class-priors`` is given.

Rows: ``base`` (``nnUNetTrainerFusionABAF`` of an earlier release, given by ``--baseline-code``: a folder holding
that release's ``nnunet_mvext`` package, which the row's training and prediction import instead of this one);
``nnUNetTrainerFusionConcat``, ``…DSN``, ``…ABAF``, ``…Decision`` on one encoder per phase; ABAF with one candidate
setting each (``abaf_patch``: lesion_context patch; ``abaf_v2_embedding``: release 2's embedding;
``abaf_sqrt``: case_sampling sqrt_balanced; ``abaf_smooth``: label_smoothing 0.1; ``abaf_dropout``: phase_dropout
0.1; ``abaf_misalign``: phase_misalignment_voxels 2) and with all four of the last (``abaf_all``); ABAF trained by
nnU-Net's SGD (``abaf_sgd``, lr 1e-2) and by Adan at 1e-3 (``abaf_lr1e-3``) instead of Adan 3e-3; ABAF with beta
detached in the auxiliary loss (``abaf_detach_beta``); early fusion (the
same network with one phase group holding all channels, ``phase_channels: [[0, …, P-1]]``); each single phase
(``phase_channels: [[p]]``), all reported, none picked on the held-out cases; ABAF with the first release's protocol
(``protocol_ablation``: lesion-only sampling, per-phase intensity augmentation, whole-patch pooling; all three, and
each alone); classification only, localised by the held-out labels (``predict-cls --roi labelsTs``, no decoder): ABAF
over 2.5D views (``nnUNetTrainerMultiViewABAF``, every phase x axial, coronal, sagittal) and ABAF over 3D phase
encoders (``segmentation: false``); ABAF with ``classification_loss_weight`` 0.5 and 1.0 (the other rows: 0.2). The
fold's validation Dice per label (nnU-Net's ``summary.json``) is recorded with each row. ``--rows`` runs a subset;
results are kept in ``WORKDIR/results.json`` and ``--resume`` continues an earlier run in the same work folder, so the
table can be completed in several steps. The table (with every row measured so far) is appended to ``--append``.

Ceilings (:mod:`ceilings`, in-process, same split and held-out cases, computed the same way on every ``--data``):
``oracle`` (logistic regression on first-order statistics of the ground-truth region and a ring around it, per
phase), ``crops`` (the fusion network trained outside nnU-Net's loop on ground-truth lesion-centred patches,
``--crop-steps``) and ``crop_cnn`` (the strong crop ceiling: a small 3D CNN of its own on ground-truth region crops,
as many samples as an nnU-Net row sees, ``--epochs`` x ``--iterations`` x batch 2, unless ``--crop-samples`` is
given). The table gives each row's macro-F1 gap to the better of the ceilings measured. On box-labelled data every
row is also classified given the held-out boxes (``predict-cls --roi labelsTs``, rows named ``<row> --roi``) besides
its own localisation, as LLD-MMRI's protocol gives every patient's boxes. ``--jobs N`` runs N rows at a time (each
row's training, prediction and evaluation are separate processes; on a GPU machine the rows share the GPU);
``--deadline S`` starts no row after S seconds.

CPU run recorded in RESULTS.md (about 5 minutes per row on 2 cores)::

    python benchmarks/fusion_classification_results.py --workdir /tmp/fcr --device cpu --data binary \\
        --append benchmarks/RESULTS.md

GPU: add ``--device cuda`` (test-time mirroring is then on) and larger ``--epochs``/``--iterations``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

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
from nnunet_mvext.synthetic.lesion_types import generate_lesion_types_dataset
from nnunet_mvext.synthetic.multiphase import generate_multiphase_dataset
from results_file import held_out_metrics, measured_by, recorded_command, report, with_interval, write_results

logger = logging.getLogger("fusion_classification_results")
HEADS = {"concat": "nnUNetTrainerFusionConcat", "dsn": "nnUNetTrainerFusionDSN", "abaf": "nnUNetTrainerFusionABAF",
         "decision": "nnUNetTrainerFusionDecision"}
DATA = {"binary": dict(dataset_id=511, num_phases=3, num_classes=2, box_labels=False),
        "multiclass": dict(dataset_id=512, num_phases=8, num_classes=7, box_labels=True),
        "lesion-types": dict(dataset_id=513, num_phases=8, num_classes=7, box_labels=True,
                             name="MVExtLesionTypes")}
GENERATORS = {"binary": "synthetic.multiphase (binary)", "multiclass": "synthetic.multiphase (enhancement patterns)",
              "lesion-types": "synthetic.lesion_types (LLD-MMRI lesion types)"}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--data", choices=tuple(DATA), default="binary")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--num-train", type=int, default=40)
    parser.add_argument("--num-test", type=int, default=64)
    parser.add_argument("--shape", type=int, nargs=3, default=(40, 40, 40))
    parser.add_argument("--misregistration", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="trainer_settings seed and dataset seed")
    parser.add_argument("--class-priors", type=float, nargs="+", default=None,
                        help="class frequencies of the generated data (default: alternating / uniform)")
    parser.add_argument("--rows", nargs="+", default=None,
                        help="subset of rows: concat dsn abaf decision early phase0 phase1 ... (default: all)")
    parser.add_argument("--resume", action="store_true", help="continue an earlier run in --workdir")
    parser.add_argument("--force", action="store_true", help="replace an earlier run in --workdir")
    parser.add_argument("--append", default=None, help="append the table to this markdown file")
    parser.add_argument("--baseline-code", default=None,
                        help="folder holding an earlier release's nnunet_mvext package, for the 'base' row")
    parser.add_argument("--jobs", type=int, default=1, help="rows run at a time")
    parser.add_argument("--deadline", type=float, default=None, help="start no row after this many seconds")
    parser.add_argument("--crop-steps", type=int, default=600, help="training steps of the 'crops' ceiling")
    parser.add_argument("--crop-samples", type=int, default=None,
                        help="samples the 'crop_cnn' ceiling sees (default: an nnU-Net row's, epochs x iterations x 2)")
    parser.add_argument("--ceiling-threads", type=int, default=None,
                        help="torch CPU threads of the in-process ceilings (default: torch's; 1 is faster on a "
                             "shared machine)")
    return parser.parse_args()


#: ABAF with items of the first release's protocol turned back (trainer setting ``protocol_ablation``)
ABLATIONS = {"abaf_first_release": ["lesion_only_sampling", "per_phase_augmentation", "patch_pooling"],
             "abaf_lesion_only_sampling": ["lesion_only_sampling"],
             "abaf_per_phase_augmentation": ["per_phase_augmentation"],
             "abaf_patch_pooling": ["patch_pooling"]}


#: one candidate setting each (issue 15), and all of the last four together
CANDIDATES = {"abaf_patch": {"lesion_context": "patch"},
              "abaf_v2_embedding": {"protocol_ablation": ["lesion_mean_embedding"]},
              "abaf_sqrt": {"case_sampling": "sqrt_balanced"},
              "abaf_smooth": {"label_smoothing": 0.1},
              "abaf_dropout": {"phase_dropout": 0.1},
              "abaf_misalign": {"phase_misalignment_voxels": 2},
              "abaf_all": {"case_sampling": "sqrt_balanced", "label_smoothing": 0.1, "phase_dropout": 0.1,
                           "phase_misalignment_voxels": 2},
              # the optimisation: nnU-Net's SGD (the trainers' default) and Adan at its paper's learning rate
              "abaf_sgd": {"optimizer": "sgd", "initial_lr": 0.01},
              "abaf_lr1e-3": {"initial_lr": 0.001},
              # the auxiliary term sum_p beta_p CE(aux_p) pulls beta towards the phase whose own classifier is best
              # (on the 7-class curves beta ends near 0.7 on phase 0, <= 0.02 on phases 1-6); detached, only the
              # fused prediction trains beta
              "abaf_detach_beta": {"abaf_detach_beta": True},
              # one encoder shared by the eight phases sees eight times the samples per weight (on the LLD-MMRI mock
              # it beat one encoder per phase: benchmarks/lld_accuracy.py)
              "abaf_shared": {"shared_encoder": True},
              # the shared encoder with one affine pair per phase in each norm (it lowered the lesion Dice without)
              "abaf_shared_phase_norm": {"shared_encoder": True, "phase_norm": True},
              # diagnostic: the shared encoder trained (almost) for the segmentation alone; its lesion Dice says whether
              # the shared weights or the classification gradient through them cost the Dice
              "abaf_shared_seg_weight": {"shared_encoder": True, "classification_loss_weight": 0.01},
              # the first stage one per phase (the full-resolution skip of the decoder), the deeper stages shared
              "abaf_shared_from_1": {"shared_encoder": True, "phase_specific_stages": 1},
              "abaf_shared_from_2": {"shared_encoder": True, "phase_specific_stages": 2},
              # the oracle's first-order statistics (lesion and ring intensity per phase) in the embedding
              "abaf_input_contrast": {"input_contrast": True},
              # one encoder per phase for the segmentation (its Dice), a separate encoder shared by the phases from
              # the second resolution on for the case class (its gain), each trained by its own loss
              "abaf_cls_encoder": {"classification_encoder_width": 1.0},
              # the default before classification_encoder_width became null (1 with a decoder): the case class read
              # from the per-phase segmentation encoders
              "abaf_seg_encoders": {"classification_encoder_width": 0}}
#: computed in-process by :mod:`ceilings`
CEILINGS = ("oracle", "crops", "crop_cnn")
BASE = "base"
ROI = " --roi"


def rows_for(num_phases: int) -> dict:
    """``{row: (trainer, configuration, extra trainer_settings)}``."""
    rows = {BASE: (HEADS["abaf"], "3d_base", {})}
    rows.update({mode: (trainer, "3d_fusion", {}) for mode, trainer in HEADS.items()})
    for row, extra in CANDIDATES.items():
        rows[row] = (HEADS["abaf"], f"3d_{row}", extra)
    rows["early"] = (HEADS["concat"], "3d_early", {"phase_channels": [list(range(num_phases))]})
    for p in range(num_phases):
        rows[f"phase{p}"] = (HEADS["concat"], f"3d_phase{p}", {"phase_channels": [[p]]})
    for row, items in ABLATIONS.items():
        rows[row] = (HEADS["abaf"], f"3d_{row}", {"protocol_ablation": items})
    # classification only, localised by the held-out labels (predict-cls --roi): 2.5D views vs 3D phase encoders
    rows["views_abaf_roi"] = ("nnUNetTrainerMultiViewABAF", "3d_views", {})
    rows["abaf_roi"] = (HEADS["abaf"], "3d_fusion_roi", {"segmentation": False})
    # the weight of the classification loss against the segmentation loss (the rows above use 0.2)
    for weight in (0.5, 1.0):
        rows[f"abaf_weight{weight}"] = (HEADS["abaf"], f"3d_abaf_weight{weight}",
                                        {"classification_loss_weight": weight})
    rows.update({c: (None, None, {}) for c in CEILINGS})
    return rows


def validation_dice(results_folder: str, dataset_name: str, trainer: str, configuration: str,
                    row_settings: dict) -> Optional[dict]:
    """nnU-Net's Dice per label on the fold's validation cases (``fold_0/validation/summary.json``); {} for a row
    without a decoder, None where a decoder's summary is missing."""
    if localised_by_labels(trainer, row_settings):
        return {}
    summary = os.path.join(results_folder, dataset_name, f"{trainer}__nnUNetPlans__{configuration}", "fold_0",
                           "validation", "summary.json")
    if not os.path.isfile(summary):
        return None
    with open(summary) as f:
        return {label: m["Dice"] for label, m in json.load(f)["mean"].items()}


def localised_by_labels(trainer: str, row_settings: dict) -> bool:
    """Rows without a decoder: predict-cls localises with the held-out labels (``--roi labelsTs``)."""
    return "MultiView" in trainer or row_settings.get("segmentation") is False


def row_label(row: str, trainer: str) -> str:
    if row == BASE:
        return f"{trainer}, previous release (--baseline-code)"
    if row in CANDIDATES:
        return f"{trainer}, " + ", ".join(f"{k} {v}" for k, v in CANDIDATES[row].items())
    if row == "oracle":
        return "ceiling: feature oracle (logistic regression on ground-truth region statistics)"
    if row == "crops":
        return "ceiling: fusion network (ABAF) trained on ground-truth lesion-centred patches outside nnU-Net's loop"
    if row == "crop_cnn":
        return "ceiling: small 3D CNN on ground-truth region crops outside nnU-Net's loop"
    if row == "early":
        return "early fusion (one encoder, all phases as channels)"
    if row.startswith("phase"):
        return f"single phase {row[5:]}"
    if row in ABLATIONS:
        return f"{trainer}, protocol_ablation {', '.join(ABLATIONS[row])}"
    if row == "views_abaf_roi":
        return f"{trainer} (every phase x axial, coronal, sagittal; --roi labelsTs)"
    if row == "abaf_roi":
        return f"{trainer}, segmentation false (3D phase encoders; --roi labelsTs)"
    if row.startswith("abaf_weight"):
        return f"{trainer}, classification_loss_weight {row[len('abaf_weight'):]}"
    return trainer


def row_environment(env: dict, row: str, baseline_code: Optional[str]) -> dict:
    """The subprocess environment of a row: the 'base' row imports the earlier release's package."""
    if row != BASE:
        return env
    if baseline_code is None:
        raise SystemExit("row 'base' needs --baseline-code (a folder holding an earlier release's nnunet_mvext)")
    code = os.path.abspath(baseline_code)
    if not os.path.isdir(os.path.join(code, "nnunet_mvext")):
        raise SystemExit(f"--baseline-code {code} holds no nnunet_mvext package folder")
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in (code, env.get("PYTHONPATH")) if p),
            "nnUNet_extTrainer": os.path.join(code, "nnunet_mvext", "nnunet_lookup")}


def epoch_seconds(log_file: str) -> Optional[float]:
    """The median of nnU-Net's 'Epoch time' lines in a training log."""
    import re
    import statistics

    with open(log_file) as f:
        times = [float(m.group(1)) for m in re.finditer(r"Epoch time: ([0-9.]+) s", f.read())]
    return statistics.median(times) if times else None


def run_row(row: str, spec: tuple, args, dataset, data: dict, env: dict, workdir: str, logs: str) -> dict:
    """Train, predict (own localisation; with ``--roi`` too on box data) and evaluate one row: ``{key: metrics}``."""
    trainer, configuration, row_settings = spec
    row_env = row_environment(env, row, args.baseline_code)
    tag = row.replace(" ", "_")
    start = time.time()
    train_log = os.path.join(logs, f"train_{tag}.log")
    run_console_script([console_script("nnUNetv2_train"), str(data["dataset_id"]), configuration, "0", "-tr", trainer,
                        "-device", args.device], row_env, train_log)
    common = {"train_seconds": time.time() - start, "epoch_seconds": epoch_seconds(train_log), "trainer": trainer,
              "validation_dice": validation_dice(env["nnUNet_results"], dataset.dataset_name, trainer, configuration,
                                                 row_settings),
              "row_settings": row_settings, "command": recorded_command(__file__)}
    ways = [("", localised_by_labels(trainer, row_settings))]
    if data["box_labels"] and not localised_by_labels(trainer, row_settings):
        ways.append((ROI, True))
    out = {}
    for suffix, given_boxes in ways:
        key = f"{tag}{'_roi' if suffix else ''}"
        pred = os.path.join(workdir, f"pred_{key}")
        run_console_script([console_script("nnunet-mvext"), "predict-cls", "-i", dataset.images_ts, "-o", pred, "-d",
                            str(data["dataset_id"]), "-c", configuration, "-f", "0", "-tr", trainer, "-device",
                            args.device] + ([] if args.device == "cuda" else ["--disable_tta"])
                           + (["--roi", dataset.labels_ts] if given_boxes else []), row_env,
                           os.path.join(logs, f"predict_{key}.log"))
        metrics = held_out_metrics(pred, dataset.labels_ts, env, os.path.join(logs, f"evaluate_{key}.log"))
        out[row + suffix] = {**metrics, **common, "localisation": "given boxes" if given_boxes else "own"}
    return out


_PREPROCESSED: dict = {}


def run_ceiling(row: str, args, dataset, data: dict, env: dict, workdir: str, logs: str) -> dict:
    """The ``oracle`` or ``crops`` row (:mod:`ceilings`) on the fold-0 training cases and the held-out cases."""
    import ceilings
    from nnunet_mvext.architectures.multiphase_fusion_net import MultiPhaseFusionNet
    from nnunet_mvext.trainers.fusion_trainers import _import_arch_kwargs

    raw = os.path.join(env["nnUNet_raw"], dataset.dataset_name)
    preprocessed = os.path.join(env["nnUNet_preprocessed"], dataset.dataset_name)
    with open(os.path.join(raw, "dataset.json")) as f:
        dataset_json = json.load(f)
    block = dataset_json["classification"]
    names = [block["class_names"][str(i)] for i in range(len(block["class_names"]))]
    labels = {c: int(v) for c, v in block["labels"].items()}
    with open(os.path.join(dataset.labels_ts, "classification.csv")) as f:
        test_labels = {r[0]: int(r[1]) for r in list(csv.reader(f))[1:]}
    lesion = int(dataset_json["labels"]["lesion"])
    start = time.time()
    train_ids = ceilings.fold0_training_cases(preprocessed, case_ids(dataset.train_cases))
    key = (preprocessed, tuple(train_ids), tuple(sorted(test_labels)))
    if key not in _PREPROCESSED:  # the ceilings of one run share the preprocessed cases
        with nnunet_paths(env):
            _PREPROCESSED[key] = (
                ceilings.preprocessed_cases(raw, preprocessed, "3d_fusion", train_ids, "Tr"),
                ceilings.preprocessed_cases(raw, preprocessed, "3d_fusion", sorted(test_labels), "Ts"))
    train, test = _PREPROCESSED[key]
    order = sorted(test)
    extra = {}
    if row == "oracle":
        probabilities = ceilings.oracle_probabilities(train, test, labels, lesion, order)
    elif row == "crop_cnn":
        samples = crop_cnn_samples(args)
        device = torch.device(args.device)
        network = ceilings.train_crop_cnn(train, labels, lesion, len(names), samples, device, seed=args.seed)
        probabilities = ceilings.crop_cnn_probabilities(network, test, lesion, order, device)
        extra = {"samples": samples}
    else:
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        config = PlansManager(os.path.join(preprocessed, "nnUNetPlans.json")).get_configuration("3d_fusion")
        network = MultiPhaseFusionNet(config.network_arch_class_name, _import_arch_kwargs(config),
                                      len(dataset_json["channel_names"]), 1, len(names), "abaf", segmentation=False)
        network.apply(network.initialize)
        device = torch.device(args.device)
        network = ceilings.train_on_crops(network, train, labels, lesion, config.patch_size, args.crop_steps, device,
                                          seed=args.seed)
        probabilities = ceilings.crop_probabilities(network, test, lesion, config.patch_size, order, device)
    pred = os.path.join(workdir, f"pred_{row}")
    ceilings.write_predictions(pred, order, probabilities, names, os.path.join(raw, "dataset.json"))
    metrics = held_out_metrics(pred, dataset.labels_ts, env, os.path.join(logs, f"evaluate_{row}.log"))
    return {row: {**metrics, "train_seconds": time.time() - start, "epoch_seconds": None, "trainer": None,
                  "validation_dice": {}, "row_settings": {}, "command": recorded_command(__file__),
                  "localisation": "ground truth", "training_cases": len(train_ids),
                  "ceiling_version": ceilings.VERSIONS[row], **extra}}


def outdated_ceiling(row: str, measured: dict) -> bool:
    """A ceiling row of ``results.json`` measured by another version of its definition (:data:`ceilings.VERSIONS`;
    rows from before the versions were recorded count as version 1)."""
    import ceilings

    return row in CEILINGS and measured.get("ceiling_version", 1) != ceilings.VERSIONS[row]


def crop_cnn_samples(args) -> int:
    """The samples the ``crop_cnn`` ceiling sees: ``--crop-samples``, else as many as an nnU-Net row."""
    from nnunet_mvext.planning.plans_config import load_template

    batch = load_template("3d_tiny_cpu")[1]["configuration"]["batch_size"]  # the nnU-Net rows' configuration
    return args.crop_samples if args.crop_samples is not None else args.epochs * args.iterations * batch


def main() -> None:
    args = arguments()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.ceiling_threads is not None:
        torch.set_num_threads(args.ceiling_threads)
    workdir = os.path.abspath(args.workdir)
    data = {**DATA[args.data]}
    env = nnunet_environment(workdir, args.device)
    results_file = os.path.join(workdir, "results.json")
    if not args.resume:
        prepare_workdir(workdir, args.force, owner="a benchmark script")
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "logs", "results.json"):
            claim_output(workdir, name)
    logs = os.path.join(workdir, "logs")
    os.makedirs(logs, exist_ok=True)  # also for --resume in a new work folder
    results = json.loads(Path(results_file).read_text()) if os.path.isfile(results_file) else {}
    dataset = generate_or_load(args, data, env, logs)
    settings = {"num_epochs": args.epochs, "num_iterations_per_epoch": args.iterations,
                "num_val_iterations_per_epoch": 4, "optimizer": "adan", "initial_lr": 3e-3, "seed": args.seed,
                # as the demo: with 1.0 the lesion label was not learnt in a few hundred iterations (rows
                # abaf_weight0.5 and abaf_weight1.0 measure it)
                "classification_loss_weight": 0.2,
                "save_every": max(1, args.epochs // 2), "validation_mirroring": args.device == "cuda"}
    rows = rows_for(data["num_phases"])
    selected = args.rows or [r for r in rows if r != BASE or args.baseline_code]
    unknown = [r for r in selected if r not in rows]
    if unknown:
        raise SystemExit(f"unknown --rows {unknown}; allowed: {', '.join(rows)}")
    todo = [r for r in selected if r not in results or outdated_ceiling(r, results[r])]
    for row in selected:
        if row in results and row not in todo:
            logger.info("%s: measured earlier, kept", row)
        elif row in results:
            logger.info("%s: measured by an earlier definition of the ceiling, measured again", row)
    with nnunet_paths(env):
        # the ceilings preprocess and build their network with the heads' configuration
        for row in todo + (["abaf"] if any(r in CEILINGS for r in todo) else []):
            trainer, configuration, row_settings = rows[row]
            if trainer is None:
                continue
            try:
                add_configuration(str(data["dataset_id"]), "3d_tiny_cpu", name=configuration,
                                  extra_trainer_settings={**settings, **row_settings})
            except MVExtError as e:  # the heads share 3d_fusion: added by an earlier row
                if "already exists" not in str(e):
                    raise
                refuse_stale_configuration(env, dataset.dataset_name, row, configuration, {**settings, **row_settings})
        for row in selected:
            if rows[row][0] is not None:
                refuse_stale_model(env, dataset.dataset_name, row, *rows[row][:2])
    write_fold0_split(env, dataset)
    started = time.time()
    lock = threading.Lock()

    def one(row: str) -> None:
        if args.deadline is not None and time.time() - started >= args.deadline:
            logger.info("%s: not started (--deadline %s s reached)", row, args.deadline)
            return
        try:
            if row in CEILINGS:
                measured = run_ceiling(row, args, dataset, data, env, workdir, logs)
            else:
                measured = run_row(row, rows[row], args, dataset, data, env, workdir, logs)
        except Exception as e:  # one failed row must not lose the others; its log names the cause
            logger.error("%s failed: %s", row, e)
            return
        with lock:
            results.update(write_results(results_file, measured))
        for key, m in measured.items():
            logger.info("%s: AUC %s, accuracy %s, macro-F1 %.3f", key, with_interval(m, "auc"),
                        with_interval(m, "accuracy"), m["macro_f1"])

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(one, todo))
    changed = {}
    for row, (trainer, configuration, row_settings) in rows.items():  # rows measured before the Dice was recorded
        if row in results and "validation_dice" not in results[row] and trainer is not None:
            changed[row] = {**results[row], "validation_dice": validation_dice(
                env["nnUNet_results"], dataset.dataset_name, trainer, configuration, row_settings)}
    results = write_results(results_file, changed)
    report(table(args, data, dataset, results, rows), args.append)


def refuse_stale_configuration(env: dict, dataset_name: str, row: str, configuration: str, intended: dict) -> None:
    """A configuration kept from an earlier run (``--resume``) must hold the row's settings of this run: a row whose
    settings changed in this script since would otherwise train with the old ones."""
    from nnunet_mvext.planning.plans_config import load_template

    plans_file = os.path.join(env["nnUNet_preprocessed"], dataset_name, "nnUNetPlans.json")
    with open(plans_file) as f:
        stored = json.load(f)["configurations"][configuration].get("trainer_settings", {})
    expected = {**load_template("3d_tiny_cpu")[1]["configuration"].get("trainer_settings", {}), **intended}
    differing = sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
    if differing:
        changes = ", ".join(f"{k}: {stored.get(k)!r} (plans) vs {expected.get(k)!r} (row)" for k in differing)
        raise SystemExit(f"row {row}: configuration '{configuration}' in {plans_file} was added by an earlier run "
                         f"with other trainer_settings ({changes}). Use a new --workdir, or remove '{configuration}' "
                         f"from the plans and its model folder to measure the row again.")


def refuse_stale_model(env: dict, dataset_name: str, row: str, trainer: str, configuration: str) -> None:
    """A model folder kept from an earlier run (``--resume``) must hold the network its row resolves to now: a release
    that changes a default (``classification_encoder_width`` null -> 1) leaves the row's trainer_settings as they were,
    and the kept model and results would be reported as the new default. The ``base`` row is skipped: an earlier
    release (``--baseline-code``) trains it, so its network differs from today's on purpose."""
    if row == BASE:
        return
    from nnunet_mvext.classification.fusion_setup import CASE_KEY, changes_text, differing_keys
    from nnunet_mvext.trainers import fusion_trainers, multiview_trainers
    from nnunet_mvext.trainers.settings_trainer import settings_from_plans

    model_plans = os.path.join(env["nnUNet_results"], dataset_name, f"{trainer}__nnUNetPlans__{configuration}",
                               "plans.json")
    if not os.path.isfile(model_plans):
        return
    with open(model_plans) as f:
        stored = json.load(f)["configurations"].get(configuration, {}).get(CASE_KEY)
    preprocessed = os.path.join(env["nnUNet_preprocessed"], dataset_name)
    with open(os.path.join(preprocessed, "nnUNetPlans.json")) as f:
        plans = json.load(f)
    with open(os.path.join(preprocessed, "dataset.json")) as f:
        dataset_json = json.load(f)
    cls = getattr(fusion_trainers, trainer, None) or getattr(multiview_trainers, trainer)
    now = cls.describe_model(plans, configuration, dataset_json,
                             settings_from_plans(plans, configuration, cls.settings_defaults, cls.settings_scopes))
    if stored is not None and differing_keys(stored, now):
        raise SystemExit(f"row {row}: the model in {os.path.dirname(model_plans)} was trained with another network "
                         f"than the row gives now ({changes_text(stored, now)}), e.g. before a default changed. Use a "
                         f"new --workdir, or remove the model folder and the row from results.json to measure it "
                         f"again.")


def case_ids(cases) -> list[str]:
    """Case ids of generated cases (dataclasses) or of cases read back from ``cases.json`` (dicts)."""
    return sorted(c["case_id"] if isinstance(c, dict) else c.case_id for c in cases)


def write_fold0_split(env: dict, dataset) -> None:
    """nnU-Net's own seeded 5-fold split, written before rows train in parallel (each would write it otherwise)."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    path = os.path.join(env["nnUNet_preprocessed"], dataset.dataset_name, "splits_final.json")
    if not os.path.isfile(path):
        with open(path + ".tmp", "w") as f:
            json.dump(generate_crossval_split(case_ids(dataset.train_cases), seed=12345, n_splits=5), f, indent=1)
        os.replace(path + ".tmp", path)


def generate_or_load(args, spec: dict, env: dict, logs: str):
    name = f"Dataset{spec['dataset_id']:03d}_{spec.get('name', 'MVExtSynthetic')}"
    kwargs = dict(dataset_id=spec["dataset_id"], num_train=args.num_train, num_test=args.num_test, shape=args.shape,
                  seed=args.seed, misregistration_voxels=args.misregistration, box_labels=spec["box_labels"],
                  class_priors=args.class_priors)
    if os.path.isdir(os.path.join(env["nnUNet_raw"], name)):
        from nnunet_mvext.synthetic.dataset_folder import SyntheticDataset

        with open(os.path.join(env["nnUNet_raw"], name, "cases.json")) as f:
            cases = json.load(f)
        return SyntheticDataset(name, os.path.join(env["nnUNet_raw"], name), tuple(cases["Tr"]), tuple(cases["Ts"]))
    if args.data == "lesion-types":
        dataset = generate_lesion_types_dataset(env["nnUNet_raw"], dataset_name=spec["name"], **kwargs)
    else:
        dataset = generate_multiphase_dataset(env["nnUNet_raw"], num_phases=spec["num_phases"],
                                              num_classes=spec["num_classes"], **kwargs)
    run_console_script([console_script("nnUNetv2_plan_and_preprocess"), "-d", str(spec["dataset_id"]), "-c",
                        "3d_fullres", "-np", env["nnUNet_def_n_proc"]], env,
                       os.path.join(logs, f"plan_{spec['dataset_id']}.log"))
    return dataset


def dice_text(m: dict) -> str:
    if m.get("validation_dice") is None:
        return "missing"
    return ", ".join(f"{label}: {d:.3f}" for label, d in m["validation_dice"].items()) or "no decoder"


def table(args, spec: dict, dataset, results: dict, rows: dict) -> list[str]:
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (2 cores)"
    lines = [f"### Multi-phase classification, {args.data} data, seed {args.seed}, {datetime.date.today()}, {device}, "
             f"torch {torch.__version__}", "",
             f"`{recorded_command(__file__)}`", "",
             *measured_by(results, [k for k in results], recorded_command(__file__)),
             f"{GENERATORS[args.data]}: {spec['num_phases']} phases, {spec['num_classes']} classes"
             f"{f' (priors {args.class_priors})' if args.class_priors else ''}, {len(dataset.train_cases)} training "
             f"cases (fold 0: 80 % train, 20 % validation), {len(dataset.test_cases)} held-out cases, misregistration "
             f"up to {args.misregistration} voxels, {'box' if spec['box_labels'] else 'voxel'} lesion labels; 3-stage "
             f"8/16/32 network, patch 32^3, {args.epochs} epochs x {args.iterations} iterations, Adan 3e-3, "
             f"classification_loss_weight 0.2, seed {args.seed}; checkpoint_final.pth; "
             f"predict-cls{' --disable_tta' if args.device == 'cpu' else ''}. Localisation: own = the model's "
             f"predicted lesion; given boxes = predict-cls --roi labelsTs (rows without a decoder always); ground "
             f"truth = the ceilings. 95 % intervals: DeLong (binary AUC), stratified bootstrap (the rest). One "
             f"training per row: differences inside the intervals are not differences.", "",
             "| model | localisation | AUC | balanced accuracy | macro-F1 | macro-F1 gap to the better ceiling | "
             "Cohen's kappa | classes never predicted | predicted per class | mean beta | "
             "fold-0 validation Dice per label | s/epoch | train s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    measured_ceilings = {c: results[c]["macro_f1"] for c in CEILINGS if c in results}
    best = max(measured_ceilings, key=measured_ceilings.get) if measured_ceilings else None
    for row, (trainer, _, _) in rows.items():
        for key in (row, row + ROI):
            if key not in results:
                continue
            m = results[key]
            beta = ", ".join(f"{k} {v:.2f}" for k, v in m["mean_beta"].items()) or "-"
            if m.get("beta_concentration"):
                c = m["beta_concentration"]
                beta += (f"; a case's largest: median {c['median_largest']:.2f}, > 0.9 in "
                         f"{100 * c['share_above_0.9']:.0f} % of cases")
            never = [n for n, c in m["predicted_class_counts"].items() if c == 0]
            never_text = f"{len(never)} ({', '.join(never)})" if never else "0"
            seconds = "-" if m.get("epoch_seconds") is None else f"{m['epoch_seconds']:.1f}"
            gap = "-" if best is None else f"{m['macro_f1'] - measured_ceilings[best]:+.3f} ({best})"
            label = row_label(row, trainer) + (f", {m['samples']} samples" if m.get("samples") else "")
            lines.append(f"| {label} | {m.get('localisation', 'own')} | {with_interval(m, 'auc')} | "
                         f"{with_interval(m, 'balanced_accuracy')} | {m['macro_f1']:.3f} | {gap} | "
                         f"{with_interval(m, 'cohen_kappa')} | {never_text} | {m['predicted_class_counts']} | {beta} | "
                         f"{dice_text(m)} | {seconds} | "
                         f"{m['train_seconds']:.0f} |")
    missing = [r for r in (args.rows or []) if r not in results]
    if missing:
        lines += ["", f"Not run or failed: {', '.join(missing)}."]
    return lines


if __name__ == "__main__":
    main()
