"""import-lld on a mock LLD-MMRI release: import time and alignment error of ``--alignment crop`` and ``resample``.

A mock release (``nnunet-mvext make-lld-mock``: ``--patients`` patients, eight series each on its own grid, every
phase shifted by up to ``--misregistration-mm`` per axis, box bounds jittered by up to ``--box-jitter`` voxels, 30 %
of the patients with 2-3 lesions, 20 % unreleased, the three defects) is imported twice, in this process with one
process writing (``-np 1``), timed with ``time.perf_counter``; one release per ``--box-jitter`` value (same seed:
the same images, differently jittered boxes).

**Alignment error** (the mock knows every lesion's true centre in every series): for every case, every lesion of it
and every phase ``p`` other than the case's reference phase ``r`` that was not a placeholder, the distance in mm
between where the two phases' true lesion centres land in the case's array::

    e = || diag(s) (i_p - i_r) ||,   i_q = continuous index of the lesion's true centre in q's series space on the
                                           grid q was sampled on (alignment.json), s = the case's output spacing

0 is a perfect alignment. ``resample`` keeps the misregistration between the phases (``e`` = the difference of their
shifts); ``crop`` replaces it by the error of the boxes' centres (the annotators' jitter and the rounding to voxels).
The table gives the mean, median, 95th percentile and maximum over all (case, lesion, phase) and the share within
one voxel of the output grid along every axis. The classification accuracy of the two alignments needs trainings:
``--prepare`` also plans and preprocesses both datasets (``nnUNetv2_plan_and_preprocess --verify_dataset_integrity``)
and writes their splits by patient (``make-splits --groups``) for the first ``--box-jitter``, and logs the training
commands.

    python benchmarks/lld_import.py --workdir /tmp/lldbench --box-jitter 0 1 2 --append benchmarks/RESULTS.md
    python benchmarks/lld_import.py --workdir /tmp/lldtrain --prepare     # datasets 810 (crop), 811 (resample)
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nnunet_mvext.lld_mmri.alignment import Grid
from nnunet_mvext.lld_mmri.import_release import ALIGNMENT_RECORD, LESIONS, import_release
from nnunet_mvext.lld_mmri.mock_release import generate_mock_release, lesion_centre
from nnunet_mvext.pipeline import claim_output, console_script, nnunet_environment, prepare_workdir, run_console_script
from results_file import recorded_command, report

logger = logging.getLogger("lld_import")
ALIGNMENTS = ("crop", "resample")


def alignment_errors(dataset_folder: str, truth: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(errors mm, within one voxel along every axis)`` over every (case, lesion, phase other than the reference)
    of an imported mock (module docstring)."""
    import csv

    with open(os.path.join(dataset_folder, ALIGNMENT_RECORD)) as f:
        record = json.load(f)
    with open(os.path.join(dataset_folder, LESIONS), newline="") as f:
        lesions = {r["case_id"]: (r["patient"], r["lesions"].split(";")) for r in csv.DictReader(f)}
    errors, within = [], []
    for case, entry in record.items():
        patient, indices = lesions[case]
        spacing = np.array(entry["output"]["spacing"])
        ref = entry["reference_phase"]
        grids = {p: Grid.from_dict(v["sampling"]) for p, v in entry["phases"].items()}
        for index in indices:
            at_ref = grids[ref].continuous_index(lesion_centre(truth, patient, index, ref))
            for phase, grid in grids.items():
                if phase == ref:
                    continue
                delta = spacing * (grid.continuous_index(lesion_centre(truth, patient, index, phase)) - at_ref)
                errors.append(float(np.linalg.norm(delta)))
                within.append(bool(np.all(np.abs(delta) <= spacing)))
    return np.array(errors), np.array(within)


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--misregistration-mm", type=float, default=6.0)
    parser.add_argument("--box-jitter", type=int, nargs="+", default=[2],
                        help="one mock release per value, same seed (same images, boxes jittered differently)")
    parser.add_argument("--dataset-id", type=int, default=810, help="crop dataset id of the first --box-jitter; "
                                                                    "resample gets the next one, and so on")
    parser.add_argument("--prepare", action="store_true", help="also plan, preprocess and split both datasets")
    parser.add_argument("--force", action="store_true", help="replace an earlier run in --workdir")
    parser.add_argument("--append", default=None, help="append the table to this markdown file")
    return parser.parse_args(argv)


def explicit_arguments(args: argparse.Namespace) -> list[str]:
    argv = ["--workdir", args.workdir, "--patients", str(args.patients), "--seed", str(args.seed),
            "--misregistration-mm", f"{args.misregistration_mm:g}", "--box-jitter", *map(str, args.box_jitter),
            "--dataset-id", str(args.dataset_id)]
    return argv + (["--prepare"] if args.prepare else []) + (["--append", args.append] if args.append else [])


def main(argv=None) -> None:
    args = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    workdir = os.path.abspath(args.workdir)
    prepare_workdir(workdir, args.force, owner="benchmarks/lld_import.py")
    raw = claim_output(workdir, "nnUNet_raw")
    load_before = os.getloadavg()[0]

    rows, generate_s = {}, {}
    for k, jitter in enumerate(args.box_jitter):
        release = claim_output(workdir, f"release_jitter{jitter}")
        start = time.perf_counter()
        mock = generate_mock_release(release, args.patients, args.seed, misregistration_mm=args.misregistration_mm,
                                     box_jitter=jitter)
        generate_s[jitter] = time.perf_counter() - start
        truth = mock.truth()
        for offset, alignment in enumerate(ALIGNMENTS):
            start = time.perf_counter()
            result = import_release(release, args.dataset_id + len(ALIGNMENTS) * k + offset, raw_folder=raw,
                                    alignment=alignment, num_processes=1)
            seconds = time.perf_counter() - start
            errors, within = alignment_errors(result.folder, truth)
            rows[(jitter, alignment)] = (result, seconds, errors, within)

    lines = [f"### import-lld on a mock release, {datetime.date.today()}, CPU ({os.cpu_count()} cores)", "",
             f"`{recorded_command(__file__, explicit_arguments(args))}`", "",
             f"{args.patients} patients (seed {args.seed}), misregistration up to {args.misregistration_mm:g} mm per "
             f"axis per phase; one release per box jitter (generating one took "
             f"{', '.join(f'{v:.1f}' for v in generate_s.values())} s). Import with one process. Alignment error: "
             f"distance between a phase's and the reference phase's true lesion centre in the case's array, over "
             f"every (case, lesion, phase).", "",
             "| box jitter (voxels) | alignment | cases (imagesTr / imagesTs) | import s | error mean mm | median | "
             "95th pct | max | within 1 voxel per axis |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (jitter, alignment), (result, seconds, errors, within) in rows.items():
        lines.append(f"| {jitter} | {alignment} | {len(result.train_cases)} / {len(result.test_cases)} | "
                     f"{seconds:.1f} | {errors.mean():.2f} | {np.median(errors):.2f} | "
                     f"{np.percentile(errors, 95):.2f} | {errors.max():.2f} | {100 * within.mean():.0f} % |")
    lines += ["", f"1-minute load average {load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after."]
    report(lines, args.append)

    if args.prepare:
        env = nnunet_environment(workdir, "cpu")
        prepared = {a: rows[(args.box_jitter[0], a)] for a in ALIGNMENTS}
        ids = [str(args.dataset_id + i) for i in range(len(ALIGNMENTS))]
        log_file = os.path.join(claim_output(workdir, "logs"), "prepare.txt")
        os.makedirs(os.path.dirname(log_file), exist_ok=True)
        run_console_script([console_script("nnUNetv2_plan_and_preprocess"), "-d", *ids, "-c", "3d_fullres",
                            "--verify_dataset_integrity"], env, log_file)
        for result, *_ in prepared.values():
            run_console_script([console_script("nnunet-mvext"), "make-splits", result.dataset_name, "--groups",
                                os.path.join(result.folder, "groups.csv")], env, log_file)
        logger.info("Prepared %s. Train, e.g.:\n  export nnUNet_raw=%s nnUNet_preprocessed=%s nnUNet_results=%s\n"
                    "  for f in 0 1 2 3 4; do nnUNetv2_train D 3d_fullres $f -tr nnUNetTrainerFusionABAF; done  "
                    "# D = %s", ", ".join(r[0].dataset_name for r in prepared.values()), env["nnUNet_raw"],
                    env["nnUNet_preprocessed"], env["nnUNet_results"], " or ".join(ids))


if __name__ == "__main__":
    main()
