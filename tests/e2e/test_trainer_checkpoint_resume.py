"""A seeded training interrupted after epoch k and resumed with ``nnUNetv2_train --c`` equals the uninterrupted run.

The "interruption" is nnU-Net's own: the configuration first has ``num_epochs = k`` (training ends normally and
writes ``checkpoint_final.pth``), then ``num_epochs = N`` and ``--c`` continues from that checkpoint at epoch k, as a
user extending a training does (killing a process at a chosen epoch cannot be done reliably in a test). Changing
``num_epochs`` changes the poly schedule, so epochs before k must not depend on it: with k = 1 and no warmup, epoch 0
runs at ``initial_lr`` whatever ``num_epochs`` is (poly at t = 0), and the test checks that the logged learning rates
of all epochs equal the uninterrupted run's.

The uninterrupted run and the first part run nnU-Net's own training path (``get_trainer_from_args``,
``maybe_load_checkpoint``, ``run_training``) in one subprocess without the final validation, which costs more CPU
than the training here; only the resumed run goes through the ``nnUNetv2_train`` console script.
"""

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import DATASET_ID, run

pytestmark = pytest.mark.e2e

TRAINER = "nnUNetTrainerMVAdan"
CONFIG = "3d_tiny_seeded"            # trained k epochs, then resumed to N
REFERENCE = "3d_tiny_seeded_ref"     # trained N epochs in one go
FOLD = 1                             # one validation case (fold 0 has two): the final validation is the slow part
K, N = 1, 3
SETTINGS = {"num_epochs": N, "num_iterations_per_epoch": 2, "num_val_iterations_per_epoch": 1, "seed": 12345,
            "warmup_epochs": 0}

# nnUNetv2_train's path without the final validation; then the state a `--c` run starts from.
HELPER = """
import multiprocessing, sys
import torch
from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

dataset, fold, trainer_name, out, *configurations = sys.argv[1:]
torch.set_num_threads(multiprocessing.cpu_count())  # what nnUNetv2_train -device cpu does
for configuration in configurations:
    trainer = get_trainer_from_args(dataset, configuration, int(fold), trainer_name, device=torch.device("cpu"))
    maybe_load_checkpoint(trainer, False, False)
    trainer.run_training()
resumed = get_trainer_from_args(dataset, configurations[-1], int(fold), trainer_name, continue_training=True,
                                device=torch.device("cpu"))
maybe_load_checkpoint(resumed, True, False)
torch.save({"network": resumed.network.state_dict(), "optimizer": resumed.optimizer.state_dict(),
            "current_epoch": resumed.current_epoch}, out + "/resumed_state.pth")
nnUNetTrainer.save_checkpoint(resumed, out + "/nnunet_keys.pth")
resumed.save_checkpoint(out + "/our_keys.pth")
"""


def _equal(a, b) -> bool:
    """Exact equality of nested checkpoint content (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _set_configuration(workspace, name, settings, **entry):
    with open(workspace.plans_file) as f:
        plans = json.load(f)
    plans["configurations"][name] = {**entry, "trainer_settings": dict(settings)}
    with open(workspace.plans_file, "w") as f:
        json.dump(plans, f, indent=2)


def test_seeded_resume_with_c_across_an_epoch_boundary_equals_uninterrupted(workspace, tmp_path):
    entry = {"inherits_from": "3d_tiny_cpu", "patch_size": [16, 16, 16]}  # the fixture's tiny configuration
    _set_configuration(workspace, CONFIG, {**SETTINGS, "num_epochs": K}, **entry)
    _set_configuration(workspace, REFERENCE, SETTINGS, **entry)
    proc = subprocess.run([sys.executable, "-c", HELPER, str(DATASET_ID), str(FOLD), TRAINER, str(tmp_path),
                           REFERENCE, CONFIG], env=workspace.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fold = os.path.join(workspace.model_folder(TRAINER, CONFIG), f"fold_{FOLD}")
    saved = _load(os.path.join(fold, "checkpoint_final.pth"))  # after epoch k; the resumed run overwrites it

    # what `--c` starts from equals what was saved after epoch k
    state = _load(tmp_path / "resumed_state.pth")
    assert state["current_epoch"] == saved["current_epoch"] == K
    assert _equal(state["network"], saved["network_weights"])
    assert _equal(state["optimizer"], saved["optimizer_state"])
    # our checkpoint is nnU-Net's plus the settings record
    assert set(_load(tmp_path / "our_keys.pth")) == set(_load(tmp_path / "nnunet_keys.pth")) | \
        {"nnunet_mvext_trainer_settings"}

    _set_configuration(workspace, CONFIG, SETTINGS, **entry)
    run(["nnUNetv2_train", DATASET_ID, CONFIG, FOLD, "-tr", TRAINER, "-device", "cpu", "--c"], workspace.env)

    resumed = _load(os.path.join(fold, "checkpoint_final.pth"))
    reference = _load(os.path.join(workspace.model_folder(TRAINER, REFERENCE), f"fold_{FOLD}", "checkpoint_final.pth"))
    lrs = reference["logging"]["lrs"]
    assert len(lrs) == N and len(set(lrs)) == N, "the schedule must move from epoch to epoch"
    assert resumed["logging"]["lrs"] == lrs
    logs = [Path(p).read_text() for p in sorted(glob.glob(os.path.join(fold, "training_log_*.txt")))]
    (log,) = [text for text in logs if f"Epoch {N - 1}" in text]  # the resumed run's
    logged = [float(line.rsplit(":", 1)[1]) for line in log.splitlines() if "Current learning rate:" in line]
    assert logged == [round(lr, 5) for lr in lrs[K:]]  # nnU-Net logs 5 decimals

    assert "trainer_settings changed since checkpoint_final.pth was written; from epoch 1 on" in log
    assert f"  num_epochs: {K} -> {N} (plans)" in log and "learning-rate schedule" in log

    assert resumed["logging"]["train_losses"] == reference["logging"]["train_losses"]
    assert not _equal(resumed["network_weights"], saved["network_weights"]), "the resumed run must train"
    assert _equal(resumed["network_weights"], reference["network_weights"])
    assert _equal(resumed["optimizer_state"], reference["optimizer_state"])
