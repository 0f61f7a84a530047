"""import-lld on a mock LLD-MMRI release: import time, imported spacing and alignment error of ``--alignment crop``
and ``resample``, with the geometry from ``Annotation.json`` or from the headers.

A mock release made as the real one is (``nnunet-mvext make-lld-mock``: ``--patients`` patients, eight series each on
its own anisotropic grid whose geometry is only in ``Annotation.json`` (the headers read 1 x 1 x 1), every phase
shifted by up to ``--misregistration-mm`` per axis, box bounds jittered by up to ``--box-jitter-mm`` mm, 30 % of the
patients with 2-3 lesions, 20 % unreleased, the three defects, one flipped patient, one with repeated slices) is
imported once per ``--alignment`` and ``--geometry``, in this process with one process writing (``-np 1``), timed
with ``time.perf_counter``, with ``--flipped-patients`` naming the mock's flipped patient; one release per
``--box-jitter-mm`` value (same seed: the same images, differently jittered boxes).

**Imported spacing**: per case, the largest relative difference between the output grid's spacing and the reference
series' true spacing (the JSON's); 0 with ``--geometry json``.

**Alignment error** (the mock knows every lesion's true centre in every series): for every case, every lesion of it
and every phase ``p`` other than the case's reference phase ``r`` that was not a placeholder, the distance in mm
between where the two phases' true lesion centres land in the case's array::

    e = || diag(t) (i_p - i_r) ||,   i_q = continuous index, on the grid q was sampled on (alignment.json), of the
                                           lesion's true centre: its true voxel index in q's series, mapped through
                                           the grid the import gave that series (alignment.json 'series_grid');
                                           t = the true mm per voxel of the case's array (the output spacing scaled
                                           by the reference series' true spacing over its imported spacing)

0 is a perfect alignment. ``resample`` keeps the misregistration between the phases (``e`` = the difference of their
shifts); ``crop`` replaces it by the error of the boxes' centres (the annotators' jitter and the rounding to voxels).
The table gives the mean, median, 95th percentile and maximum over all (case, lesion, phase) and the share within
one voxel of the output grid along every axis. The classification accuracy of the two alignments needs trainings:
``--prepare`` also plans and preprocesses both datasets (``nnUNetv2_plan_and_preprocess --verify_dataset_integrity``)
and writes their splits by patient (``make-splits --groups``) for the first ``--box-jitter``, and logs the training
commands.

    python benchmarks/lld_import.py --workdir /tmp/lldbench --box-jitter-mm 0 3 --append benchmarks/RESULTS.md
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
from nnunet_mvext.lld_mmri.geometry import flipped_grid
from nnunet_mvext.lld_mmri.import_release import ALIGNMENT_RECORD, LESIONS, import_release
from nnunet_mvext.lld_mmri.mock_release import generate_mock_release, lesion_centre
from nnunet_mvext.pipeline import claim_output, console_script, nnunet_environment, prepare_workdir, run_console_script
from results_file import recorded_command, report

logger = logging.getLogger("lld_import")
ALIGNMENTS = ("crop", "resample")


def true_grid(truth: dict, patient: str, phase: str, fallback: Grid) -> Grid:
    """The true geometry of a mock series (``mock_truth.json`` 'series'; a flipped one with its flip fixed); the
    legacy mock records none: its headers are true, ``fallback``."""
    entry = truth["patients"].get(patient) or truth.get("test_patients", {}).get(patient)
    series = (entry.get("series") or {}).get(phase)
    if not series:
        return fallback
    grid = Grid(tuple(series["size"]), tuple(series["spacing"]), tuple(series["origin"]),
                (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return flipped_grid(grid) if series.get("flipped") else grid


def alignment_errors(dataset_folder: str, truth: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(errors mm, within one voxel along every axis, spacing deviation per case)`` over every (case, lesion, phase
    other than the reference) of an imported mock (module docstring)."""
    import csv

    with open(os.path.join(dataset_folder, ALIGNMENT_RECORD)) as f:
        record = json.load(f)
    with open(os.path.join(dataset_folder, LESIONS), newline="") as f:
        lesions = {r["case_id"]: (r["patient"], r["lesions"].split(";")) for r in csv.DictReader(f)}
    errors, within, deviation = [], [], []
    for case, entry in record.items():
        patient, indices = lesions[case]
        ref = entry["reference_phase"]
        sampling = {p: Grid.from_dict(v["sampling"]) for p, v in entry["phases"].items()}
        imported = {p: Grid.from_dict(v.get("series_grid", v["sampling"])) for p, v in entry["phases"].items()}
        true = {p: true_grid(truth, patient, p, imported[p]) for p in sampling}
        scale = np.array(true[ref].spacing) / np.array(imported[ref].spacing)
        mm = np.array(entry["output"]["spacing"]) * scale
        deviation.append(float(np.max(np.abs(np.array(entry["output"]["spacing"]) / np.array(true[ref].spacing)
                                              - 1))))

        positions = {(phase, index): sampling[phase].continuous_index(imported[phase].physical_point(
            true[phase].continuous_index(lesion_centre(truth, patient, index, phase)))) for phase in sampling
            for index in indices}
        for index in indices:
            at_ref = positions[(ref, index)]
            for phase in sampling:
                if phase == ref:
                    continue
                delta = mm * (positions[(phase, index)] - at_ref)
                errors.append(float(np.linalg.norm(delta)))
                within.append(bool(np.all(np.abs(delta) <= mm)))
    return np.array(errors), np.array(within), np.array(deviation)


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--misregistration-mm", type=float, default=6.0)
    parser.add_argument("--box-jitter-mm", type=float, nargs="+", default=[3.0],
                        help="one mock release per value, same seed (same images, boxes jittered differently)")
    parser.add_argument("--geometry", nargs="+", default=["json", "header"], choices=("json", "header"),
                        help="import-lld --geometry values to compare (default: both)")
    parser.add_argument("--dataset-id", type=int, default=810, help="dataset id of the first import; the others "
                                                                    "get the next ids")
    parser.add_argument("--prepare", action="store_true", help="also plan, preprocess and split both datasets")
    parser.add_argument("--force", action="store_true", help="replace an earlier run in --workdir")
    parser.add_argument("--append", default=None, help="append the table to this markdown file")
    return parser.parse_args(argv)


def explicit_arguments(args: argparse.Namespace) -> list[str]:
    argv = ["--workdir", args.workdir, "--patients", str(args.patients), "--seed", str(args.seed),
            "--misregistration-mm", f"{args.misregistration_mm:g}", "--box-jitter-mm",
            *(f"{v:g}" for v in args.box_jitter_mm), "--geometry", *args.geometry, "--dataset-id", str(args.dataset_id)]
    return argv + (["--prepare"] if args.prepare else []) + (["--append", args.append] if args.append else [])


def main(argv=None) -> None:
    args = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    workdir = os.path.abspath(args.workdir)
    prepare_workdir(workdir, args.force, owner="benchmarks/lld_import.py")
    raw = claim_output(workdir, "nnUNet_raw")
    load_before = os.getloadavg()[0]

    rows, generate_s, dataset_id = {}, {}, args.dataset_id
    for jitter in args.box_jitter_mm:
        release = claim_output(workdir, f"release_jitter{jitter:g}mm")
        start = time.perf_counter()
        mock = generate_mock_release(release, args.patients, args.seed, misregistration_mm=args.misregistration_mm,
                                     box_jitter_mm=jitter)
        generate_s[jitter] = time.perf_counter() - start
        truth = mock.truth()
        flipped = os.path.join(release, "flipped_patients.txt")
        with open(flipped, "w") as f:
            f.write("\n".join(truth.get("quirks", {}).get("flipped_patients", [])) + "\n")
        for geometry in args.geometry:
            for alignment in ALIGNMENTS:
                start = time.perf_counter()
                result = import_release(release, dataset_id, raw_folder=raw, alignment=alignment, num_processes=1,
                                        geometry=geometry, flipped_patients=flipped)
                dataset_id += 1
                seconds = time.perf_counter() - start
                rows[(jitter, geometry, alignment)] = (result, seconds, *alignment_errors(result.folder, truth))

    lines = [f"### import-lld on a mock release, {datetime.date.today()}, CPU ({os.cpu_count()} cores)", "",
             f"`{recorded_command(__file__, explicit_arguments(args))}`", "",
             f"{args.patients} patients (seed {args.seed}), made as the real release (geometry only in "
             f"Annotation.json, in-plane 0.6-1.6 mm, slices 2-8 mm), misregistration up to "
             f"{args.misregistration_mm:g} mm per axis per phase; one release per box jitter (generating one took "
             f"{', '.join(f'{v:.1f}' for v in generate_s.values())} s). Import with one process, --flipped-patients "
             f"naming the mock's flipped patient. Spacing: largest relative difference of a case's spacing from its "
             f"reference series' true spacing. Alignment error: distance in true mm between a phase's and the "
             f"reference phase's true lesion centre in the case's array, over every (case, lesion, phase).", "",
             "| box jitter (mm) | geometry | alignment | cases (imagesTr / imagesTs) | import s | spacing off (max) | "
             "error mean mm | median | 95th pct | max | within 1 voxel per axis |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (jitter, geometry, alignment), (result, seconds, errors, within, deviation) in rows.items():
        lines.append(f"| {jitter:g} | {geometry} | {alignment} | {len(result.train_cases)} / "
                     f"{len(result.test_cases)} | {seconds:.1f} | {100 * deviation.max():.0f} % | {errors.mean():.2f} "
                     f"| {np.median(errors):.2f} | {np.percentile(errors, 95):.2f} | {errors.max():.2f} | "
                     f"{100 * within.mean():.0f} % |")
    lines += ["", f"1-minute load average {load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after."]
    report(lines, args.append)

    if args.prepare:
        env = nnunet_environment(workdir, "cpu")
        prepared = {a: rows[(args.box_jitter_mm[0], args.geometry[0], a)] for a in ALIGNMENTS}
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
