"""The fusion trainers under DDP: each rank classifies its share of the validation cases, and the per-epoch metrics
and the final validation's predictions are pooled with ``dist.all_gather_object``. Two processes with the ``gloo``
backend on the CPU run the real methods (``on_validation_epoch_end``, ``perform_actual_validation``) on a stand-in
trainer (nnU-Net's ``-num_gpus`` needs CUDA, and its trainer ``__init__`` picks a CUDA device once a process group
exists); the pooled results must equal those of one process that classifies every case."""

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from nnunetv2.training.logging.nnunet_logger import MetaLogger
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

import nnunet_mvext.trainers.fusion_trainers as fusion_trainers
from nnunet_mvext.trainers.fusion_trainers import nnUNetTrainerFusionDSN

K, PHASES = 3, 3
PATCH = (10, 10, 10)
#: case -> class; "free" has no lesion voxel (left out of the per-epoch metric, global pooling in the final one)
LABELS = {"c1": 0, "c2": 1, "c3": 2, "c4": 0, "c5": 2, "c6": 1, "c7": 1, "free": 0, "c9": 2}
#: rank 0's only case is lesion-free: it contributes no per-epoch prediction and no phase weights
RANK0_EMPTY = {"free": 0, "x1": 1}
#: c6 misses its phase 1 (a zero placeholder)
MISSING = {"c6": [1]}


class _ReadingNet(torch.nn.Module):
    """Stand-in for a trained fusion network: v_p the mean of phase p over the region (the whole patch without one);
    logit_k = -4 (mean of the present v_p - k)^2, auxiliary logits per phase alike, beta the softmax of v over the
    present phases."""

    decoder = None

    def forward_with_classification(self, x, roi, absent_phases=None):
        present = torch.ones(x.shape[:2], dtype=torch.bool) if absent_phases is None else ~absent_phases
        m = torch.ones_like(x[:, :1]) if roi is None else roi
        v = (x * m).flatten(2).sum(2) / m.flatten(1).sum(1, keepdim=True)                  # (B, P)
        classes = torch.arange(K, dtype=x.dtype)
        logits = -4 * ((v * present).sum(1, keepdim=True) / present.sum(1, keepdim=True) - classes) ** 2
        aux = -4 * (v[:, :, None] - classes) ** 2
        beta = torch.softmax(v.masked_fill(~present, float("-inf")), 1)
        return None, {"logits": logits, "aux_logits": aux, "beta": beta, "embedding": v, "present": present}


class _DDPWrapped(torch.nn.Module):
    """What the trainer's ``network`` is under DDP: the model under ``.module``."""

    def __init__(self, module):
        super().__init__()
        self.module = module


class _Cases:
    """nnU-Net's dataset of the given cases: ``identifiers`` and ``load_case``."""

    def __init__(self, keys, labels: dict):
        self.identifiers, self.labels = list(keys), labels

    def load_case(self, key):
        rng = np.random.default_rng(sorted(self.labels).index(key))
        x = rng.normal(0, 0.3, (PHASES, 14, 14, 14)).astype(np.float32)
        seg = np.zeros((1, 14, 14, 14), np.int16)
        if key != "free":
            seg[0, 4:9, 5:10, 3:8] = 2
        for p in range(PHASES):
            if p not in MISSING.get(key, []):
                # the class, blurred per case and phase so that some cases are misread
                x[p][seg[0] == 2] += self.labels[key] + rng.normal(0, 0.5)
            else:
                x[p] = 0
        return x, seg, None, {}


def _trainer(folder: str, rank: int, ddp: bool, labels: dict):
    trainer = object.__new__(nnUNetTrainerFusionDSN)
    log = []
    net = _ReadingNet()
    trainer.__dict__.update(
        absent={}, missing_record=MISSING, case_info={"phase_channels": [[0], [1], [2]], "segmentation": False},
        device=torch.device("cpu"), is_ddp=ddp, local_rank=rank, fold=0, current_epoch=0, num_epochs=5,
        output_folder=folder, phase_names=["p0", "p1", "p2"], _best_auc_ema=None, _cls_val_count=0,
        lesion_label=2, fallback_label=None, _loaded_checkpoint=None, pretrained=None, log=log,
        network=_DDPWrapped(net) if ddp else net, case_labels=labels, case_class_names=["a", "b", "c"],
        configuration_manager=SimpleNamespace(patch_size=PATCH), inference_allowed_mirroring_axes=(0, 1, 2),
        trainer_settings=SimpleNamespace(validation_mirroring=False), preprocessed_dataset_folder=folder,
        do_split=lambda: (["t1"], sorted(labels)), dataset_class=lambda folder, keys: _Cases(keys, labels),
        dataset_json={"classification": {"class_names": {"0": "a", "1": "b", "2": "c"}, "labels": labels}},
        plans_manager=SimpleNamespace(dataset_name="Dataset1_X"),
        print_to_log_file=lambda *args, **kwargs: log.append(" ".join(map(str, args))))
    trainer.logger = MetaLogger(folder, False)
    for key in ("val_auc", "ema_val_auc", "val_macro_f1", "val_kappa"):
        trainer.logger.local_logger.my_fantastic_logging.setdefault(key, [])
    trainer._cls_val_dataset = _Cases(sorted(labels), labels)
    trainer.absent = trainer.absent_of_cases(sorted(labels))
    return trainer


def _validate(folder: str, rank: int, ddp: bool, labels: dict) -> dict:
    """One epoch's classification metrics, then the final validation; what each rank saw and wrote."""
    nnUNetTrainer.on_validation_epoch_end = lambda self, outputs: None  # nnU-Net's pseudo Dice: not under test
    fusion_trainers.default_num_processes = 1                          # the export pool: unused without a decoder
    trainer = _trainer(folder, rank, ddp, labels)
    trainer.on_validation_epoch_end([])
    trainer.perform_actual_validation()
    validation = os.path.join(folder, "validation")
    files = {}
    for name in ("classification.csv", "classification_summary.json"):
        path = os.path.join(validation, name)
        files[name] = Path(path).read_text() if os.path.isfile(path) else None
    embeddings = os.path.join(validation, "classification_embeddings.npz")
    if os.path.isfile(embeddings):
        with np.load(embeddings) as npz:
            files["embeddings"] = {"case_ids": npz["case_ids"].tolist(), "embeddings": npz["embeddings"].tolist()}
    return {"metrics": {key: trainer.logger.get_value(key, step=-1)
                        for key in ("val_auc", "ema_val_auc", "val_macro_f1", "val_kappa")},
            "count": trainer._cls_val_count, "beta_log": [line for line in trainer.log if "beta" in line],
            "predicted": [line.split()[1] for line in trainer.log if line.startswith("predicting ")],
            "files": files}


def _worker(rank: int, world: int, init_file: str, folder: str, labels: dict) -> None:
    torch.set_num_threads(1)  # a forked child does not reuse the parent's intra-op thread pool (as DataLoader workers)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    own = os.path.join(folder, f"rank{rank}")  # each rank's own output folder: what rank 1 writes can be checked
    os.makedirs(own)
    try:
        result = _validate(own, rank, ddp=True, labels=labels)
    finally:
        dist.destroy_process_group()
    with open(os.path.join(own, "result.json"), "w") as f:
        json.dump(result, f)


def _pooled_and_single(tmp_path, monkeypatch, labels: dict):
    monkeypatch.setattr(nnUNetTrainer, "on_validation_epoch_end", nnUNetTrainer.on_validation_epoch_end)
    monkeypatch.setattr(fusion_trainers, "default_num_processes", fusion_trainers.default_num_processes)
    single_folder = tmp_path / "single"
    single_folder.mkdir()
    single = json.loads(json.dumps(_validate(str(single_folder), 0, ddp=False, labels=labels)))
    ddp_folder = tmp_path / "ddp"
    ddp_folder.mkdir()
    # forked, not spawned: the ranks inherit the imported modules (a spawned rank re-imports nnU-Net, ~5-10 s)
    mp.start_processes(_worker, args=(2, str(tmp_path / "rendezvous"), str(ddp_folder), labels), nprocs=2,
                       join=True, start_method="fork")
    return single, [json.loads((ddp_folder / f"rank{r}" / "result.json").read_text()) for r in range(2)]


def test_two_ranks_pool_the_per_epoch_metrics_and_the_final_validation_as_one_process(tmp_path, monkeypatch):
    single, ranks = _pooled_and_single(tmp_path, monkeypatch, LABELS)
    # the stand-in's predictions are not trivial: some cases misread, so the metrics can tell cases apart
    assert single["count"] == 8 and 0.5 < single["metrics"]["val_auc"] < 1.0
    assert single["files"]["classification.csv"].count("\n") == 1 + len(LABELS)
    for rank in ranks:                                          # every rank logs the pooled metrics
        assert rank["count"] == single["count"]
        assert rank["metrics"] == single["metrics"]
        assert rank["beta_log"] == single["beta_log"]
    # each case's sliding window runs on one rank only
    assert sorted(ranks[0]["predicted"] + ranks[1]["predicted"]) == sorted(single["predicted"]) == sorted(LABELS)
    # rank 0 writes the pooled final validation, exactly as one process; rank 1 writes nothing
    assert ranks[0]["files"] == single["files"]
    assert ranks[1]["files"] == {"classification.csv": None, "classification_summary.json": None}


def test_the_phase_weights_of_the_other_ranks_are_logged_when_rank_0_has_no_case_with_a_lesion(tmp_path, monkeypatch):
    """The release before took rank 0's empty share as "no phase weights" and logged none."""
    single, ranks = _pooled_and_single(tmp_path, monkeypatch, RANK0_EMPTY)
    assert single["count"] == 1 and len(single["beta_log"]) == 1
    assert [r["beta_log"] for r in ranks] == [single["beta_log"]] * 2
