"""The ``nnunet-mvext`` command: what nnU-Net has no command for.

``demo``, ``trainers``, ``env``, ``add-config``, ``plan``, ``set-classes``, ``predict-cls``, ``evaluate-cls``,
``compare-cls``, ``make-splits``, ``make-dataset``, ``boxes-to-labels``, ``import-lld``, ``export-lld``,
``make-lld-mock``. Training, prediction and evaluation stay nnU-Net's own commands.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
from typing import Optional, Sequence

from nnunet_mvext.errors import MVExtError

logger = logging.getLogger("nnunet_mvext")


def _cmd_demo(args: argparse.Namespace) -> int:
    from nnunet_mvext.demo import format_result, run_demo

    result = run_demo(args.workdir, device=args.device, dataset_id=args.dataset_id, force=args.force,
                      fusion=args.fusion)
    sys.stdout.write(format_result(result) + "\n")
    return 0


def _ext_trainer_folders() -> list[str]:
    """The folders on ``nnUNet_extTrainer`` that nnU-Net searches, in its order."""
    from nnunet_mvext._startup_hook import EXT_TRAINER_ENV

    return [p for p in os.environ.get(EXT_TRAINER_ENV, "").split(os.pathsep) if p.strip() and os.path.exists(p)]


def _shadowing_ext_folder(name: str) -> Optional[str]:
    """The first ``nnUNet_extTrainer`` folder other than this package's lookup folder in which nnU-Net's search finds
    a class called ``name``: the folder that wins nnU-Net's lookup over the entry point. None when there is none."""
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from nnunet_mvext._startup_hook import LOOKUP_FOLDER

    for folder in _ext_trainer_folders():
        if os.path.normcase(os.path.abspath(folder)) == os.path.normcase(LOOKUP_FOLDER):
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            if recursive_find_python_class(folder, name, None, base_folder=folder,
                                           cleanup_imports_from_base_folder=True) is not None:
                return folder
    return None


def trainer_resolution(name: str, declared_class: type) -> str:
    """How nnU-Net's own lookup resolves ``name``: 'yes', or why it does not resolve to ``declared_class``.

    A shadowing class is called an nnU-Net built-in only when it lives in nnunetv2; one from a folder on
    ``nnUNet_extTrainer`` (searched before this package's lookup folder) is named with that folder.
    """
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunet_mvext._startup_hook import LOOKUP_FOLDER

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            found = recursive_find_trainer_class_by_name(name)
    except RuntimeError:
        listed = {os.path.normcase(os.path.abspath(p)) for p in _ext_trainer_folders()}
        if os.path.normcase(LOOKUP_FOLDER) not in listed:
            return "no: not found (nnUNet_extTrainer lacks this package's lookup folder; see 'nnunet-mvext env')"
        return "no: not found by nnU-Net's lookup, although nnUNet_extTrainer lists this package's lookup folder"
    if found is declared_class:
        return "yes"
    shadow = f"{found.__module__}.{found.__qualname__}"
    if found.__module__.split(".")[0] == "nnunetv2":
        return f"no: SHADOWED by {shadow}, an nnU-Net built-in"
    folder = _shadowing_ext_folder(name)
    if folder is not None:
        return f"no: SHADOWED by {shadow} from the nnUNet_extTrainer folder {folder}"
    return f"no: SHADOWED by {shadow}"


def _cmd_trainers(args: argparse.Namespace) -> int:
    from nnunet_mvext.entry_point_bridge import ENTRY_POINT_GROUP, declared_trainers

    rows = []
    for trainer in declared_trainers():
        try:
            cls = trainer.load()
            resolves = trainer_resolution(trainer.name, cls)
        except Exception as e:  # a broken third-party entry point is reported, not fatal
            resolves = f"no: cannot import {trainer.target}: {type(e).__name__}: {e}"
        rows.append((trainer.name, trainer.distribution, trainer.target, resolves))
    if not rows:
        sys.stdout.write(f"No trainers declared in the '{ENTRY_POINT_GROUP}' entry-point group.\n")
        return 1
    headers = ("trainer", "distribution", "target", "nnU-Net resolves it")
    widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(3)]
    for row in [headers, *rows]:
        sys.stdout.write("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) + "  " + row[3] + "\n")
    shadowed = "no: SHADOWED by "
    for name, distribution, _, resolves in rows:
        if resolves.startswith(shadowed):
            advice = ("rename yours" if resolves.endswith(", an nnU-Net built-in")
                      else "rename one of them or take that folder off nnUNet_extTrainer")
            logger.warning("WARNING: '%s' from %s is shadowed by %s: nnUNetv2_train -tr %s will not use it; %s.",
                           name, distribution, resolves[len(shadowed):], name, advice)
    if not any(row[3] == "yes" for row in rows):
        logger.error("ERROR: nnU-Net's lookup resolves none of the %d declared trainers (see the last column).",
                     len(rows))
        return 1
    return 0


def _cmd_env(args: argparse.Namespace) -> int:
    from nnunet_mvext.entry_point_bridge import env_shell_lines

    sys.stdout.write(env_shell_lines())
    return 0


def _cmd_add_config(args: argparse.Namespace) -> int:
    from nnunet_mvext.planning.plans_config import add_configuration

    plans_file, name = add_configuration(args.dataset, args.template, name=args.name, plans_identifier=args.plans,
                                         force=args.force)
    logger.info("Wrote configuration '%s' into %s. Train it with: nnUNetv2_train %s %s FOLD -tr TRAINER%s", name,
                plans_file, args.dataset, name, "" if args.plans == "nnUNetPlans" else f" -p {args.plans}")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from nnunet_mvext.planning.plan_command import PRESETS, plan_dataset

    plans_file = plan_dataset(args.dataset, preset=args.preset, gpu_memory_target=args.gpu_memory_target,
                              plans_name=args.plans_name, configurations=args.c, num_processes=args.np,
                              preprocess=not args.no_preprocess, force=args.force, phases=args.phases)
    logger.info("Wrote %s. Train with: nnUNetv2_train %s 3d_fullres FOLD -p %s -tr %s", plans_file,
                args.dataset, os.path.basename(plans_file)[:-5], PRESETS[args.preset][1])
    return 0


def _cmd_set_classes(args: argparse.Namespace) -> int:
    from nnunet_mvext.classification.case_labels import set_classes

    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    for path in set_classes(args.dataset, args.labels_csv, names):
        logger.info("Wrote the classification block into %s", path)
    return 0


def _cmd_predict_cls(args: argparse.Namespace) -> int:
    from nnunet_mvext.classification.inference import predict_classification

    path = predict_classification(args.i, args.o, args.d, args.c, args.f, args.tr, args.p, args.chk, args.device,
                                  use_mirroring=not args.disable_tta, overwrite=args.overwrite, roi_folder=args.roi,
                                  threshold=args.threshold, force=args.force,
                                  missing_phases_file=args.missing_phases)
    logger.info("Wrote segmentations and %s", path)
    return 0


def _cmd_evaluate_cls(args: argparse.Namespace) -> int:
    from nnunet_mvext.classification.evaluation import evaluate_classification, metrics_table_markdown

    if args.cv:
        from nnunet_mvext.classification.cross_validation import evaluate_cross_validation, per_fold_table_markdown

        given = [f"-{n}" for n in ("ref", "pred") if getattr(args, n) is not None] + \
            (["--chill"] if args.chill else []) + (["--embeddings"] if args.embeddings else [])
        missing = [f"-{n}" for n in ("d", "c") if getattr(args, n) is None]
        if given or missing:
            raise MVExtError("--cv pools the folds' validation CSVs: give -d, -c, -tr [-p] [-f], not "
                             + (", ".join(given) if given else "") + (f"; missing: {', '.join(missing)}"
                                                                      if missing else "") + ".")
        cv = evaluate_cross_validation(args.d, args.c, args.tr, args.o, plans=args.p, folds=args.f,
                                       n_resamples=args.n_bootstrap, seed=args.seed,
                                       store_threshold=args.store_threshold)
        sys.stdout.write(metrics_table_markdown(cv["pooled"]) + "\n\n" +
                         per_fold_table_markdown(cv["per_fold"], cv["per_fold_summary"]) + "\n")
        logger.info("Wrote cv_metrics.json, pooled_metrics.json, report.md and plots to %s", args.o)
        return 0
    if args.ref is None or args.pred is None or args.store_threshold or args.f or args.c:
        raise MVExtError("Without --cv give -ref and -pred, and -d for integer classes (-c, -tr, -f and "
                         "--store-threshold go with --cv).")
    result = evaluate_classification(args.ref, args.pred, args.o, args.embeddings, chill=args.chill,
                                     n_resamples=args.n_bootstrap, seed=args.seed, dataset=args.d)
    sys.stdout.write(metrics_table_markdown(result) + "\n")
    logger.info("Wrote classification_metrics.json, report.md, roc.png, confusion_matrix.png, reliability.png "
                "to %s", args.o)
    return 0


def _cmd_compare_cls(args: argparse.Namespace) -> int:
    from nnunet_mvext.classification.comparison import compare_classifiers

    result = compare_classifiers(args.ref, args.predictions, args.o, chill=args.chill, n_resamples=args.n_bootstrap,
                                 seed=args.seed, dataset=args.d)
    sys.stdout.write(f"Baseline: {result['baseline']} ({result['note']})\n\n{result['table_markdown']}\n")
    logger.info("Wrote comparison.md and comparison.json to %s", args.o)
    return 0


def _cmd_make_splits(args: argparse.Namespace) -> int:
    from nnunet_mvext.classification.splits import make_splits

    make_splits(args.dataset, groups_csv=args.groups, n_folds=args.folds, seed=args.seed, force=args.force)
    return 0


def _cmd_make_dataset(args: argparse.Namespace) -> int:
    from nnunet_mvext.synthetic.lesion_types import generate_lesion_types_dataset
    from nnunet_mvext.synthetic.multiphase import generate_multiphase_dataset

    raw = args.raw or os.environ.get("nnUNet_raw")
    if not raw:
        raise MVExtError("Give the raw folder with --raw or set nnUNet_raw.")
    priors = None
    if args.class_priors:
        try:
            priors = [float(v) for v in args.class_priors.split(",")]
        except ValueError:
            raise MVExtError(f"--class-priors '{args.class_priors}': give comma-separated numbers, one per class, "
                             f"e.g. 4,2,1.") from None
    if args.generator == "lesion-types":
        if args.num_phases is not None or args.num_classes is not None:
            raise MVExtError("--generator lesion-types has the 8 LLD-MMRI series and 7 lesion types; leave out "
                             "--num-phases and --num-classes.")
        ds = generate_lesion_types_dataset(raw, dataset_id=args.dataset_id, num_train=args.num_train,
                                           num_test=args.num_test, shape=args.shape, seed=args.seed,
                                           misregistration_voxels=args.misregistration, class_priors=priors,
                                           box_labels=args.box_labels)
    else:
        ds = generate_multiphase_dataset(raw, dataset_id=args.dataset_id, num_train=args.num_train,
                                         num_test=args.num_test, shape=args.shape, seed=args.seed,
                                         misregistration_voxels=args.misregistration,
                                         num_phases=3 if args.num_phases is None else args.num_phases,
                                         num_classes=2 if args.num_classes is None else args.num_classes,
                                         class_priors=priors, box_labels=args.box_labels)
    logger.info("Wrote %s (%d training, %d test cases).", ds.folder, len(ds.train_cases), len(ds.test_cases))
    return 0


def _cmd_boxes_to_labels(args: argparse.Namespace) -> int:
    from nnunet_mvext.classification.lesion_boxes import boxes_to_labels

    boxes_to_labels(args.dataset, args.boxes_csv, output_folder=args.o, images_folder=args.images,
                    reference_channel=args.reference_channel, world=args.world, ras=args.ras, force=args.force,
                    empty_cases=args.empty_cases)
    return 0


def _cmd_import_lld(args: argparse.Namespace) -> int:
    from nnunet_mvext.lld_mmri.import_release import import_release

    if args.from_crops:
        from nnunet_mvext.lld_mmri.import_crops import import_crops as import_release
    import_release(args.release, args.d, name=args.name, raw_folder=args.raw, alignment=args.alignment,
                   reference_phase=args.reference_phase, margin=args.margin, test_patients=args.test_patients,
                   force=args.force, num_processes=args.np, geometry=args.geometry,
                   flipped_patients=args.flipped_patients, test_annotation=args.test_annotation,
                   test_images=args.test_images)
    return 0


def _cmd_export_lld(args: argparse.Namespace) -> int:
    from nnunet_mvext.lld_mmri.submission import export_submission

    export_submission(args.predictions, args.o, lesions_csv=args.lesions, overwrite=args.overwrite)
    return 0


def _cmd_make_lld_mock(args: argparse.Namespace) -> int:
    from nnunet_mvext.lld_mmri.mock_release import generate_mock_release

    generate_mock_release(args.out_dir, args.patients, args.seed, unreleased_fraction=args.unreleased_fraction,
                          multi_lesion_fraction=args.multi_lesion_fraction,
                          misregistration_mm=args.misregistration_mm, box_jitter=args.box_jitter,
                          defects=not args.no_defects, real_release=not args.legacy,
                          box_jitter_mm=args.box_jitter_mm, quirks=not args.no_quirks,
                          test_fraction=args.test_fraction)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet-mvext", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="generate a synthetic dataset; train, segment and classify it through nnU-Net")
    p.add_argument("--workdir", default="nnunet_mvext_demo", help="folder for all demo outputs (default: %(default)s)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device for training and prediction")
    p.add_argument("--dataset-id", type=int, default=501, help="nnU-Net dataset id to use (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an earlier demo run in --workdir")
    p.add_argument("--fusion", action="store_true",
                   help="also train concat, DSN and decision fusion and compare them with ABAF on the held-out cases")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("trainers", help="list trainers of the nnunetv2.trainers entry-point group")
    p.set_defaults(func=_cmd_trainers)

    p = sub.add_parser("env", help='print shell lines that set nnUNet_extTrainer: eval "$(nnunet-mvext env)"')
    p.set_defaults(func=_cmd_env)

    p = sub.add_parser("add-config", help="write a configuration from a template into a dataset's plans file")
    p.add_argument("dataset", help="dataset id or name (DatasetXXX_Name)")
    p.add_argument("template", help="shipped template name or path to a JSON template")
    p.add_argument("--name", default=None, help="configuration name (default: the template's name)")
    p.add_argument("--plans", default="nnUNetPlans", help="plans identifier (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing configuration of that name")
    p.set_defaults(func=_cmd_add_config)

    p = sub.add_parser("plan", help="nnU-Net planning with a planner that knows this package's networks")
    p.add_argument("dataset", help="dataset id or name")
    p.add_argument("--preset", default="mbtfe", help="network preset: mbtfe (MBTFEUNet) or fusion (P phase "
                                                       "encoders) (default: %(default)s)")
    p.add_argument("--phases", type=int, default=None, help="--preset fusion: phase encoders to plan for (default: "
                                                             "the channels of dataset.json)")
    p.add_argument("-gpu_memory_target", type=float, default=None, help="GB, as nnUNetv2_plan_experiment (default 8)")
    p.add_argument("--plans-name", default=None, help="plans identifier (default: nnUNetPlansMBTFE, "
                                                       "nnUNetPlansFusionP<phases>)")
    p.add_argument("-c", nargs="+", default=["3d_fullres"], help="configurations to preprocess (default: 3d_fullres)")
    p.add_argument("-np", type=int, default=4, help="processes for fingerprinting and preprocessing")
    p.add_argument("--no-preprocess", action="store_true", help="plan only")
    p.add_argument("--force", action="store_true", help="plan again into an existing plans file")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("set-classes", help="write case class labels from a case_id,class CSV into dataset.json")
    p.add_argument("dataset", help="dataset id or name")
    p.add_argument("labels_csv", help="CSV with header case_id,class (class = integer index)")
    p.add_argument("--class-names", default=None, help="comma-separated names, e.g. low_grade,high_grade")
    p.set_defaults(func=_cmd_set_classes)

    p = sub.add_parser("predict-cls", help="segment and classify cases with a fusion model (nnUNetv2_predict's args)")
    p.add_argument("-i", required=True, help="input folder (nnU-Net raw layout, CASE_XXXX.nii.gz)")
    p.add_argument("-o", required=True, help="output folder")
    p.add_argument("-d", required=True, help="dataset id or name")
    p.add_argument("-c", required=True, help="configuration")
    p.add_argument("-f", nargs="+", default=["0", "1", "2", "3", "4"], help="folds (probabilities averaged)")
    p.add_argument("-tr", default="nnUNetTrainerFusionABAF", help="trainer (default: %(default)s)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: %(default)s)")
    p.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint, e.g. checkpoint_best_auc.pth (selected "
                                                                "on each fold's validation cases: input cases among "
                                                                "them are named and marked in classification.csv)")
    p.add_argument("-device", default="cuda", choices=("cuda", "cpu", "mps"))
    p.add_argument("--disable_tta", action="store_true", help="no mirroring")
    p.add_argument("--overwrite", action="store_true", help="replace the classification.csv and segmentations of an "
                                                            "earlier predict-cls output in -o (a timestamped .bak of "
                                                            "every file replaced is kept)")
    p.add_argument("--force", action="store_true", help="write into a non-empty -o that is not an earlier predict-cls "
                                                        "output (no predict_cls.json), keeping a timestamped .bak of "
                                                        "every file replaced; implies --overwrite")
    p.add_argument("--missing-phases", default=None, help="missing_phases.json of the input cases (default: the one "
                                                           "beside the input folder, if any; it must name an input "
                                                           "case); all-zero channel files count as missing too; "
                                                           "models trained with missing_phases: zero leave those "
                                                           "phases out, others refuse")
    p.add_argument("--roi", default=None, help="folder of lesion mask or box label files (CASE.nii.gz) that localise "
                                                "the cases instead of the predicted lesion; required for models "
                                                "trained with segmentation: false")
    p.add_argument("--threshold", default="argmax", help="binary decision: argmax (default), stored (the threshold "
                                                          "evaluate-cls --cv --store-threshold chose) or a number in "
                                                          "[0, 1] (class 1 when p_1 >= it)")
    p.set_defaults(func=_cmd_predict_cls)

    p = sub.add_parser("evaluate-cls", help="metrics with 95 %% intervals, calibration and plots for "
                                            "classification.csv; --cv pools the folds' validation predictions")
    p.add_argument("-ref", default=None, help="labels CSV (case_id,class; class = name, or integer index read "
                                              "through the dataset's class names) or dataset.json with the block")
    p.add_argument("-pred", default=None, help="classification.csv from predict-cls")
    p.add_argument("-o", required=True, help="output folder")
    p.add_argument("--embeddings", default=None, help="classification_embeddings.npz for a t-SNE plot "
                                                      "(default: the one next to -pred, if any)")
    p.add_argument("--chill", action="store_true", help="score only the cases present in both files (as nnU-Net's "
                                                        "-chill; the counts left out are printed): the reference may "
                                                        "hold unpredicted cases, the predictions unlabelled ones")
    p.add_argument("--cv", action="store_true", help="pool nnUNet_results/D/TR__P__C/fold_X/validation/"
                                                     "classification.csv (out-of-fold) instead of -ref/-pred")
    p.add_argument("-d", default=None, help="dataset id or name: --cv's model; with -ref, the class names that "
                                            "integer classes are read through (default: the dataset.json that "
                                            "predict-cls wrote beside -pred)")
    p.add_argument("-c", default=None, help="--cv: configuration")
    p.add_argument("-tr", default="nnUNetTrainerFusionABAF", help="--cv: trainer (default: %(default)s)")
    p.add_argument("-p", default="nnUNetPlans", help="--cv: plans identifier (default: %(default)s)")
    p.add_argument("-f", nargs="+", default=None, help="--cv: folds to pool (default: 0 1 2 3 4, all required)")
    p.add_argument("--store-threshold", action="store_true",
                   help="--cv, binary: write the Youden threshold of the pooled out-of-fold predictions to "
                        "<model folder>/classification_threshold.json (predict-cls --threshold stored)")
    p.add_argument("--n-bootstrap", type=int, default=2000, help="bootstrap resamples (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    p.set_defaults(func=_cmd_evaluate_cls)

    p = sub.add_parser("compare-cls", help="paired comparison of models on the same cases: DeLong (binary AUC), "
                                           "paired bootstrap (the rest); every model against the first")
    p.add_argument("-ref", required=True, help="labels CSV (case_id,class; class = name, or integer index read "
                                               "through the dataset's class names) or dataset.json with the block")
    p.add_argument("predictions", nargs="+", help="classification.csv files; the first is the baseline")
    p.add_argument("-d", default=None, help="dataset id or name whose class names integer classes in -ref are read "
                                            "through (default: the dataset.json predict-cls wrote beside a CSV)")
    p.add_argument("-o", required=True, help="output folder (comparison.md, comparison.json)")
    p.add_argument("--chill", action="store_true", help="the reference may hold cases that were not predicted")
    p.add_argument("--n-bootstrap", type=int, default=2000, help="bootstrap resamples (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    p.set_defaults(func=_cmd_compare_cls)

    p = sub.add_parser("make-splits", help="write splits_final.json stratified by case class and grouped by patient")
    p.add_argument("dataset", help="dataset id or name")
    p.add_argument("--groups", default=None, help="CSV with header case_id,group (patient id) naming every case")
    p.add_argument("--folds", type=int, default=5, help="number of folds (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="shuffling seed (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing splits_final.json (a backup is kept)")
    p.set_defaults(func=_cmd_make_splits)

    p = sub.add_parser("make-dataset", help="write the synthetic multi-phase dataset into nnUNet_raw")
    p.add_argument("--raw", default=None, help="raw folder (default: $nnUNet_raw)")
    p.add_argument("--dataset-id", type=int, default=501)
    p.add_argument("--num-train", type=int, default=16)
    p.add_argument("--num-test", type=int, default=6)
    p.add_argument("--shape", type=int, nargs=3, default=(40, 40, 40))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--generator", choices=("enhancement-patterns", "lesion-types"), default="enhancement-patterns",
                   help="enhancement-patterns: abstract enhancement curves (synthetic.multiphase); lesion-types: the 7 "
                        "LLD-MMRI lesion types over its 8 series (synthetic.lesion_types) (default: %(default)s)")
    p.add_argument("--num-phases", type=int, default=None,
                   help="enhancement-patterns only: phases (channels), >= 2 (default: 3)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="enhancement-patterns only: classes, 2..7 enhancement patterns; 3 phases and 2 classes is the "
                        "binary mode (default: 2)")
    p.add_argument("--class-priors", default=None, help="comma-separated class weights, e.g. 4,2,1 (default: "
                                                        "alternating in the binary mode, uniform otherwise; "
                                                        "lesion-types: HCC 0.32, see synthetic.lesion_types)")
    p.add_argument("--box-labels", action="store_true", help="write the lesion label as its filled bounding box")
    p.add_argument("--misregistration", type=int, default=0,
                   help="shift every phase after the first by up to N voxels per axis (default: %(default)s)")
    p.set_defaults(func=_cmd_make_dataset)

    p = sub.add_parser("boxes-to-labels", help="write nnU-Net label files (filled boxes) from a CSV of boxes")
    p.add_argument("dataset", help="dataset id, name or raw dataset folder")
    p.add_argument("boxes_csv", help="CSV: case_id,label,x_min,y_min,z_min,x_max,y_max,z_max (or "
                                     "case_id,label,x_center,y_center,z_center,x_size,y_size,z_size)")
    p.add_argument("-o", default=None, help="output folder (default: the dataset's labelsTr)")
    p.add_argument("--images", default=None, help="folder of the reference images (default: imagesTr)")
    p.add_argument("--reference-channel", default="0000",
                   help="the phase whose image (CASE_XXXX) defines the grid of the boxes (default: %(default)s)")
    p.add_argument("--world", action="store_true", help="coordinates are physical mm (ITK LPS), not voxel indices")
    p.add_argument("--ras", action="store_true", help="with --world: coordinates are RAS (3D Slicer)")
    p.add_argument("--force", action="store_true", help="replace existing label files (a backup of each is kept)")
    p.add_argument("--empty-cases", action="store_true", help="write all-background labels for cases without a box")
    p.set_defaults(func=_cmd_boxes_to_labels)

    p = sub.add_parser("import-lld", help="import the LLD-MMRI 2023 release (images/, labels/Annotation.json) as an "
                                          "nnU-Net dataset: the eight phases on one grid per case")
    p.add_argument("release", help="release folder holding images/ and labels/Annotation.json")
    p.add_argument("-d", type=int, required=True, help="dataset id of the new dataset")
    p.add_argument("--name", default="LLDMMRI2023", help="dataset name: Dataset<ID>_<name> (default: %(default)s)")
    p.add_argument("--raw", default=None, help="raw folder (default: $nnUNet_raw)")
    p.add_argument("--alignment", choices=("crop", "resample"), default="crop",
                   help="crop: one case per lesion, every phase cropped around its own box (aligns the phases by "
                        "their boxes); resample: one case per patient, every phase resampled onto the reference "
                        "phase's grid by physical coordinates (default: %(default)s)")
    p.add_argument("--reference-phase", default="C+A", help="the phase whose grid (and box) a case takes "
                                                             "(default: %(default)s)")
    p.add_argument("--margin", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="crop: voxels added around the box on each side (default: the official 16 16 2)")
    p.add_argument("--test-patients", default=None, help="text file, one patient id per line: labelled patients "
                                                         "to hold out in imagesTs (the unreleased ones always are)")
    p.add_argument("--geometry", choices=("json", "header"), default=None,
                   help="where each series' spacing and origin come from: json (Annotation.json's pixel_spacing, "
                        "slice_spacing, origin; the release's headers hold none; the default) or header")
    p.add_argument("--from-crops", action="store_true",
                   help="import the official lesion crops (classification_dataset/) instead of the whole volumes "
                        "(images/): for a release downloaded without them; crop alignment only")
    p.add_argument("--flipped-patients", default=None,
                   help="'published' (the second-place team's list of patients stored upside down) or a text file of "
                        "patient ids: their series' z axis is reversed in the geometry (pixels and boxes unchanged)")
    p.add_argument("--test-annotation", default=None, help="the test patients' annotation file (Annotation_test.json):"
                                                           " imported to imagesTs/labelsTs with their classes in "
                                                           "labelsTs/classification.csv")
    p.add_argument("--test-images", default=None, help="folder of the test patients' <patient>/<studyUID>/"
                                                       "<seriesUID>.nii.gz (default: images/ beside the test "
                                                       "annotation file's folder)")
    p.add_argument("-np", type=int, default=4, help="processes writing cases (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an earlier import-lld into the same dataset "
                                                        "(only the files it wrote are removed; files changed since "
                                                        "are kept as a timestamped .bak)")
    p.set_defaults(func=_cmd_import_lld)

    p = sub.add_parser("export-lld", help="the LLD-MMRI 2023 submission file (one entry per patient) from a "
                                          "classification.csv")
    p.add_argument("predictions", help="classification.csv of predict-cls (columns p_<class> of the 7 classes)")
    p.add_argument("-o", required=True, help="output JSON, named after the team (e.g. team.json)")
    p.add_argument("--lesions", default=None, help="lesions.csv of the import-lld dataset: the patient and box "
                                                   "volume of each case (needed for the crop alignment's lesion "
                                                   "cases <patient>_<n>: default the lesions.csv beside the input "
                                                   "folder named in predict_cls.json, else refused; other ids are "
                                                   "patients)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file (a backup is kept)")
    p.set_defaults(func=_cmd_export_lld)

    p = sub.add_parser("make-lld-mock", help="write a synthetic release in LLD-MMRI 2023's layout, made as the real "
                                             "release is: geometry only in Annotation.json, its defects, a test set, "
                                             "the official crops and folds (tests, walkthrough)")
    p.add_argument("out_dir", help="new or empty folder")
    p.add_argument("--patients", type=int, default=12, help="number of patients (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unreleased-fraction", type=float, default=0.2, help="patients with category -1 "
                                                                         "(default: %(default)s)")
    p.add_argument("--multi-lesion-fraction", type=float, default=0.3, help="patients with 2 or 3 lesions "
                                                                           "(default: %(default)s)")
    p.add_argument("--misregistration-mm", type=float, default=6.0, help="each phase shifted by up to this per axis "
                                                                         "(default: %(default)s)")
    p.add_argument("--box-jitter", type=int, default=2, help="--legacy: each box bound moved by up to this many "
                                                             "voxels (default: %(default)s)")
    p.add_argument("--box-jitter-mm", type=float, default=3.0, help="each box bound moved by up to this many mm, "
                                                                    "rounded to voxels (default: %(default)s)")
    p.add_argument("--test-fraction", type=float, default=0.25,
                   help="test patients (lldmmri_test_set/, labelled) per patient of Annotation.json "
                        "(default: %(default)s)")
    p.add_argument("--no-quirks", action="store_true", help="no flipped patient, no repeated slices, no hyphenated "
                                                            "id (by default one of each)")
    p.add_argument("--legacy", action="store_true",
                   help="the earlier mock: geometry in the NIfTI headers (not only in Annotation.json), jitter in "
                        "voxels, no quirks, no test set, no classification_dataset/")
    p.add_argument("--no-defects", action="store_true", help="no skipped entries (by default patient 1 has a box "
                                                             "beyond the slice count, 2 an unreadable series, 3 a "
                                                             "missing phase)")
    p.set_defaults(func=_cmd_make_lld_mock)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except MVExtError as e:
        logger.error("nnunet-mvext %s: error: %s", args.command, e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
