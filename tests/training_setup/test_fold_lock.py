"""The fold lock: a fold that another live process trains is refused by every trainer of this package, naming that
process; a stale lock (killed process, reused pid) is taken over with a log line; the lock goes away when its process
ends (normally or by SIGTERM); ``NNUNET_MVEXT_IGNORE_FOLD_LOCK`` overrides it. The holders are real subprocesses."""

import glob
import json
import os
import signal
import subprocess
import sys
import time
from copy import deepcopy
from importlib import metadata
from pathlib import Path

import pytest
import torch

from nnunet_mvext.training_setup.fold_lock import (
    IGNORE_ENV,
    LOCK_FILE_NAME,
    FoldLockedError,
    acquire_fold_lock,
    read_lock,
)

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the subprocess checks read Linux's /proc")

DATASET = "Dataset779_Lock"
DATASET_JSON = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 2,
                "file_ending": ".nii.gz",
                "classification": {"class_names": {"0": "a", "1": "b"}, "labels": {"case_000": 0, "case_001": 1}}}
ARCH_KWARGS = {"n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
               "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
               "n_conv_per_stage": [2] * 3, "n_conv_per_stage_decoder": [2] * 2, "conv_bias": True,
               "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
               "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
               "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
PLANS = {"dataset_name": DATASET, "plans_name": "nnUNetPlans", "label_manager": "LabelManager",
         "continue_training": False,
         "configurations": {"3d_fullres": {
             "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
             "batch_size": 2, "patch_size": [16, 16, 16], "spacing": [1.0, 1.0, 1.0], "batch_dice": False,
             "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                              "arch_kwargs": ARCH_KWARGS,
                              "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}}}
# holds the lock of every folder named on its command line until its stdin closes
HOLDER = """
import sys
from nnunet_mvext.training_setup.fold_lock import acquire_fold_lock
locks = [acquire_fold_lock(folder, "holder") for folder in sys.argv[1:]]
print("held", flush=True)
sys.stdin.read()
"""


def fold_folder(results, trainer_name: str, fold: int = 0) -> str:
    return os.path.join(str(results), DATASET, f"{trainer_name}__nnUNetPlans__3d_fullres", f"fold_{fold}")


def start_holder(*folders) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    env.pop(IGNORE_ENV, None)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, *map(str, folders)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def end(proc: subprocess.Popen) -> int:
    proc.stdin.close()
    return proc.wait(timeout=30)


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv(IGNORE_ENV, raising=False)
    return tmp_path / "results"


def our_trainers() -> dict:
    """Every trainer this package declares to nnU-Net, by name."""
    return {ep.name: ep.value for ep in metadata.entry_points(group="nnunetv2.trainers")
            if ep.value.startswith("nnunet_mvext.")}


def load(target: str) -> type:
    """Imported when a test needs it (importing the fusion trainers while pytest collects adds subclasses that
    tests/training_setup/test_trainer_settings.py's defining-key test does not expect)."""
    import importlib

    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def build(trainer_class: type, fold: int = 0):
    return trainer_class(deepcopy(PLANS), "3d_fullres", fold, DATASET_JSON, torch.device("cpu"))


def training_log(trainer) -> str:
    return open(glob.glob(os.path.join(trainer.output_folder, "training_log_*.txt"))[0]).read()


def test_every_trainer_refuses_a_fold_that_a_live_process_trains_naming_it(results, monkeypatch):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    trainers = our_trainers()
    assert len(trainers) >= 12
    holder = start_holder(*(fold_folder(results, name) for name in trainers))
    try:
        reached = []
        monkeypatch.setattr(nnUNetTrainer, "__init__", lambda self, *a, **k: reached.append(self))
        for name, target in trainers.items():
            with pytest.raises(FoldLockedError) as e:
                build(load(target))
            msg = str(e.value)
            assert f"pid {holder.pid} ({sys.executable} -c " in msg, msg
            assert fold_folder(results, name) in msg and IGNORE_ENV in msg
            assert os.listdir(fold_folder(results, name)) == [LOCK_FILE_NAME]  # nothing written
        assert not reached  # refused before nnU-Net's __init__
    finally:
        assert end(holder) == 0
    assert all(not os.path.exists(os.path.join(fold_folder(results, n), LOCK_FILE_NAME)) for n in trainers)


def test_the_lock_is_released_when_its_process_ends_and_the_fold_can_continue(results):
    from nnunet_mvext.trainers.settings_trainer import nnUNetTrainerMV

    folder = fold_folder(results, "nnUNetTrainerMV")
    assert end(start_holder(folder)) == 0          # normal end
    assert os.listdir(folder) == []
    holder = start_holder(folder)
    holder.send_signal(signal.SIGTERM)             # SIGTERM: released, and the process still ends by the signal
    assert holder.wait(timeout=30) == -signal.SIGTERM
    assert os.listdir(folder) == []
    trainer = build(nnUNetTrainerMV)               # e.g. --c after the earlier run ended
    assert trainer.output_folder == folder
    lock = read_lock(os.path.join(folder, LOCK_FILE_NAME))
    assert lock.pid == os.getpid() and "nnUNetTrainerMV" in lock.trainer
    assert "fold lock" not in training_log(trainer)
    again = build(nnUNetTrainerMV)                 # the same process may construct the fold's trainer again
    assert read_lock(os.path.join(folder, LOCK_FILE_NAME)).token == again.fold_lock.record.token
    trainer.fold_lock.release()                    # an earlier acquisition does not remove the newer lock
    assert os.path.exists(os.path.join(folder, LOCK_FILE_NAME))
    again.fold_lock.release()
    assert not os.path.exists(os.path.join(folder, LOCK_FILE_NAME))


def test_a_killed_holders_lock_is_taken_over_with_a_log_line(results):
    from nnunet_mvext.trainers.adan_trainer import nnUNetTrainerMVAdan

    folder = fold_folder(results, "nnUNetTrainerMVAdan")
    holder = start_holder(folder)
    holder.kill()
    holder.wait(timeout=30)
    assert read_lock(os.path.join(folder, LOCK_FILE_NAME)).pid == holder.pid   # SIGKILL leaves it behind
    trainer = build(nnUNetTrainerMVAdan)
    log = training_log(trainer)
    assert f"Took over the stale fold lock {os.path.join(folder, LOCK_FILE_NAME)} of pid {holder.pid}" in log
    assert f"pid {holder.pid} is not alive" in log
    assert read_lock(os.path.join(folder, LOCK_FILE_NAME)).pid == os.getpid()


def test_a_pid_reused_by_another_process_is_stale_but_the_same_pid_and_start_is_not(tmp_path):
    folder = str(tmp_path / "fold_0")
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        deadline = time.time() + 30  # until the child has exec'd (its command line is readable), else the race flakes
        while b"sys.stdin.read()" not in Path(f"/proc/{other.pid}/cmdline").read_bytes() and time.time() < deadline:
            time.sleep(0.05)
        with open(f"/proc/{other.pid}/stat") as f:
            start = f.read().rsplit(")", 1)[1].split()[19]
        path = os.path.join(folder, LOCK_FILE_NAME)
        os.makedirs(folder)
        record = {"pid": other.pid, "host": os.uname().nodename, "token": "t", "start_time": start,
                  "cmdline": "nnUNetv2_train 1 3d_fullres 0"}
        with open(path, "w") as f:
            json.dump(record, f)
        with pytest.raises(FoldLockedError, match=f"pid {other.pid} \\(nnUNetv2_train 1 3d_fullres 0\\)"):
            acquire_fold_lock(folder)
        with open(path, "w") as f:
            json.dump({**record, "start_time": str(int(start) - 100)}, f)
        lock = acquire_fold_lock(folder)
        assert lock.held and f"pid {other.pid} now belongs to another process" in lock.notes[0]
        assert "import sys; sys.stdin.read()" in lock.notes[0]
        lock.release()
    finally:
        other.stdin.close()
        other.wait(timeout=30)


def test_the_environment_variable_overrides_the_lock_and_leaves_it_alone(results, monkeypatch):
    from nnunet_mvext.trainers.dice_loss_trainer import nnUNetTrainerMVDiceLoss

    folder = fold_folder(results, "nnUNetTrainerMVDiceLoss")
    holder = start_holder(folder)
    try:
        before = read_lock(os.path.join(folder, LOCK_FILE_NAME))
        monkeypatch.setenv(IGNORE_ENV, "1")
        trainer = build(nnUNetTrainerMVDiceLoss)
        assert f"{IGNORE_ENV} is set: the fold lock was not checked (the lock of pid {holder.pid}" in \
            training_log(trainer)
        assert read_lock(os.path.join(folder, LOCK_FILE_NAME)) == before
    finally:
        assert end(holder) == 0


def test_under_ddp_only_rank_0_takes_the_lock(results, monkeypatch):
    from torch import distributed as dist

    from nnunet_mvext.trainers.settings_trainer import nnUNetTrainerMV

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda *a: 1)
    trainer = nnUNetTrainerMV.__new__(nnUNetTrainerMV)
    assert trainer.take_fold_lock(deepcopy(PLANS), "3d_fullres", 0) is None
    assert not results.exists()
    monkeypatch.setattr(dist, "get_rank", lambda *a: 0)
    lock = trainer.take_fold_lock(deepcopy(PLANS), "3d_fullres", 0)
    assert lock.held and lock.path == os.path.join(fold_folder(results, "nnUNetTrainerMV"), LOCK_FILE_NAME)
    lock.release()


def test_a_start_that_fails_in_nnunets_init_leaves_no_lock_and_no_folder(results, monkeypatch):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_mvext.trainers.settings_trainer import nnUNetTrainerMV

    def fail(self, *args, **kwargs):
        raise RuntimeError("nnU-Net failed")

    monkeypatch.setattr(nnUNetTrainer, "__init__", fail)
    with pytest.raises(RuntimeError, match="nnU-Net failed"):
        build(nnUNetTrainerMV)
    assert not results.exists()


def test_a_forked_worker_neither_releases_nor_loses_the_lock_of_its_parent(tmp_path):
    """nnU-Net's augmentation workers are forked from the training process and end by SIGTERM."""
    lock = acquire_fold_lock(str(tmp_path / "fold_0"))
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        lock.release()
        if getattr(signal.getsignal(signal.SIGTERM), "__module__", None) == "nnunet_mvext.training_setup.fold_lock":
            os._exit(4)  # the child should have the handler from before the lock back
        os.kill(os.getpid(), signal.SIGTERM)
        os._exit(3)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, os.waitstatus_to_exitcode(status)
    assert read_lock(lock.path).pid == os.getpid()
    assert lock.release() and not os.path.exists(lock.path)
