"""Shared pipeline helpers: run nnU-Net's console scripts in a child environment (demo, benchmarks, tests).

Every step goes through nnU-Net's own console scripts in a subprocess, their full output to a log file and the
progress lines to :mod:`logging`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Iterator, Sequence

from nnunet_mvext.errors import MVExtError

logger = logging.getLogger(__name__)

PROGRESS_PATTERN = re.compile(r"(Epoch \d+$|Pseudo dice|Mean Validation Dice|Epoch time|Predicting case|"
                              r"Done with|Preprocessing dataset|Configuration:|Training done)")


def nnunet_environment(workdir: str, device: str) -> dict:
    """Child environment: nnU-Net's three folders inside ``workdir``; CPU-friendly worker counts on CPU."""
    env = dict(os.environ)
    env.update({"nnUNet_raw": os.path.join(workdir, "nnUNet_raw"),
                "nnUNet_preprocessed": os.path.join(workdir, "nnUNet_preprocessed"),
                "nnUNet_results": os.path.join(workdir, "nnUNet_results")})
    cpus = os.cpu_count() or 2
    env.setdefault("nnUNet_def_n_proc", str(min(cpus, 4)))
    if device == "cpu":
        env.setdefault("nnUNet_n_proc_DA", "1")
        env.setdefault("nnUNet_compile", "false")
    return env


@contextlib.contextmanager
def nnunet_paths(env: dict) -> Iterator[None]:
    """Temporarily point this process's nnU-Net folders at those of ``env`` (for in-process nnU-Net calls)."""
    keys = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
    backup = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: env[k] for k in keys})
    try:
        yield
    finally:
        for k, v in backup.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def console_script(name: str) -> str:
    """The console script ``name`` next to this Python interpreter (the environment nnunet_mvext is installed in)."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.path.isfile(candidate) else name


def run_console_script(args: Sequence[str], env: dict, log_file: str) -> float:
    """Run one nnU-Net console script; full output to ``log_file``, progress lines to the log. Returns seconds."""
    start = time.time()
    logger.info("$ %s", " ".join(args))
    with open(log_file, "w") as log, subprocess.Popen(list(args), env=env, stdout=subprocess.PIPE,
                                                      stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            log.write(line)
            text = line.strip()
            if PROGRESS_PATTERN.search(text):
                logger.info("    %s", text)
        proc.wait()
    if proc.returncode != 0:
        with open(log_file) as f:
            tail = "".join(f.readlines()[-25:])
        raise MVExtError(f"{args[0]} failed with exit code {proc.returncode}; full output in {log_file}. "
                         f"Last lines:\n{tail}")
    return time.time() - start


def predict_and_evaluate(dataset, dataset_id: int, configuration: str, trainer: str, device: str,
                         predictions: str, env: dict, logs: str, mirroring: bool = True) -> tuple[dict, float, dict]:
    """``nnUNetv2_predict`` the held-out cases (``--disable_tta`` unless ``mirroring``), ``nnUNetv2_evaluate_folder``.

    Returns (Dice per label name, foreground mean Dice, seconds per step).
    """
    times = {"predict": run_console_script(
        [console_script("nnUNetv2_predict"), "-i", dataset.images_ts, "-o", predictions, "-d", str(dataset_id),
         "-c", configuration, "-f", "0", "-tr", trainer, "-device", device, "-npp", "1", "-nps", "1"] +
        ([] if mirroring else ["--disable_tta"]),
        env, os.path.join(logs, f"predict_{trainer}.log"))}
    dice, mean_dice, times["evaluate"] = evaluate_segmentation(dataset, predictions, env,
                                                               os.path.join(logs, f"evaluate_{trainer}.log"))
    return dice, mean_dice, times


def evaluate_segmentation(dataset, predictions: str, env: dict, log_file: str) -> tuple[dict, float, float]:
    """``nnUNetv2_evaluate_folder`` of ``predictions`` against ``labelsTs``: (Dice per label name, mean, seconds)."""
    summary = os.path.join(predictions, "summary.json")
    seconds = run_console_script(
        [console_script("nnUNetv2_evaluate_folder"), dataset.labels_ts, predictions, "-djfile",
         os.path.join(predictions, "dataset.json"), "-pfile", os.path.join(predictions, "plans.json"), "-o", summary,
         "-np", env["nnUNet_def_n_proc"]], env, log_file)
    with open(summary) as f:
        metrics = json.load(f)
    with open(os.path.join(dataset.folder, "dataset.json")) as f:
        label_names = {str(v): k for k, v in json.load(f)["labels"].items()}
    dice = {label_names.get(k, k): v["Dice"] for k, v in metrics["mean"].items()}
    return dice, metrics["foreground_mean"]["Dice"], seconds


WORKDIR_MARKER = ".nnunet_mvext_demo"
# what a work folder marked by an earlier release (a marker without a list of outputs) held
_LEGACY_OUTPUTS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "logs", "predictions")


def _recorded_outputs(workdir: str) -> list[str]:
    with open(os.path.join(workdir, WORKDIR_MARKER)) as f:
        text = f.read()
    try:
        return list(json.loads(text)["outputs"])
    except (ValueError, KeyError, TypeError):
        return [n for n in os.listdir(workdir) if n in _LEGACY_OUTPUTS or n.startswith("classification_")]


def prepare_workdir(workdir: str, force: bool, owner: str = "nnunet-mvext demo") -> None:
    """Create ``workdir`` for a tool run that records every top-level entry it writes (:func:`claim_output`).

    An earlier run there is replaced only with ``force``, and then only the entries that run recorded are removed:
    anything else in the folder (a user's notes, other results) is never touched.
    """
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise MVExtError(f"--workdir {workdir} is a file, not a folder; choose a folder path.")
    marker = os.path.join(workdir, WORKDIR_MARKER)
    if os.path.isdir(workdir) and os.listdir(workdir):
        if not os.path.isfile(marker):
            raise MVExtError(f"Work directory {workdir} is not empty and was not created by {owner}; refusing to "
                             f"write into it. Choose another --workdir.")
        if not force:
            raise MVExtError(f"Work directory {workdir} holds an earlier run; pass --force to replace its outputs "
                             f"or choose another --workdir.")
        for name in _recorded_outputs(workdir):
            path = os.path.join(workdir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
            logger.info("removed %s (written by an earlier run)", path)
    os.makedirs(workdir, exist_ok=True)
    _write_marker(workdir, owner, [])


def _write_marker(workdir: str, owner: str, outputs: list[str]) -> None:
    with open(os.path.join(workdir, WORKDIR_MARKER), "w") as f:
        json.dump({"created_by": owner, "note": "--force removes only the outputs listed here",
                   "outputs": outputs}, f, indent=1)


def claim_output(workdir: str, name: str) -> str:
    """Record the top-level entry ``name`` of ``workdir`` as this run's output and return its path.

    Refuses when ``name`` already exists without being recorded: it is then somebody else's.
    """
    with open(os.path.join(workdir, WORKDIR_MARKER)) as f:
        content = json.load(f)
    path = os.path.join(workdir, name)
    if name not in content["outputs"]:
        if os.path.lexists(path):
            raise MVExtError(f"{path} exists and was not written by {content['created_by']}; refusing to write into "
                             f"it. Move it away or choose another --workdir.")
        _write_marker(workdir, content["created_by"], content["outputs"] + [name])
    return path
