"""Multi-phase case classification trained by nnU-Net's loop: ``nnUNetTrainerFusionConcat``, ``…DSN``, ``…ABAF``,
``…Decision``.

The network is :class:`~nnunet_mvext.architectures.multiphase_fusion_net.MultiPhaseFusionNet` built from the
configuration's plan. Protocol (docs/explanation/classification_protocol.md):

- **Sampling.** Segmentation keeps nnU-Net's sampling (``oversample_foreground_percent``, all labels) and nnU-Net's
  unrestricted validation loader, so pseudo Dice and ``checkpoint_best.pth`` mean what they mean in nnU-Net. The
  classification loss uses the samples of the same batch whose target patch holds the region of interest (the
  lesion; for cases without lesion voxels the ``fallback_roi_label``, if set): no extra forward pass, so step time
  and memory are those of the network itself. Lesion-free cases without a fallback label are listed at the start and
  never enter the classification loss.
- **Embedding.** Each phase's features are compared between the ground-truth lesion of the patch (one connected
  component: the one at the patch centre, else the largest, as inference uses one) and its surroundings at every
  encoder stage (:mod:`nnunet_mvext.architectures.lesion_embedding`).
- **Augmentation.** nnU-Net's transforms with the intensity transforms drawn once per sample for all phases, and
  optionally a random shift per phase but the one the label is drawn on (``phase_misalignment_voxels``; the
  import's reference phase, else the first) (:mod:`nnunet_mvext.classification.training_data`). ``phase_dropout``,
  ``label_smoothing`` and ``case_sampling`` are trainer settings.
- **Per-epoch metric.** Every validation case once per epoch, from one patch centred on its ground-truth lesion
  (deterministic, no augmentation, no mirroring): macro AUC, macro-F1 and Cohen's kappa over the classes present
  (:mod:`nnunet_mvext.classification.epoch_metrics`), logged with the macro AUC's moving average;
  ``checkpoint_best_auc.pth`` keeps the best moving average of the macro AUC from the 10th epoch on (bias-corrected,
  :mod:`nnunet_mvext.classification.epoch_metrics`; not for fold ``all``, whose "validation" cases are training
  cases). It is selected on the validation cases of the fold, so its validation metrics are optimistic; held-out
  cases or ``checkpoint_final.pth`` give unbiased ones. A classification-only model writes no
  ``checkpoint_best.pth`` (nnU-Net selects it on the pseudo Dice, which such a model does not have).
- **Final validation.** Each validation case's sliding window runs once: the segmentation is exported and scored as
  nnU-Net does, and the same probabilities localise the case for the classification, exactly as ``predict-cls``
  does (:mod:`nnunet_mvext.classification.case_prediction`). ``segmentation: false`` localises the validation cases
  with their ground-truth lesion, as ``predict-cls --roi`` does with given masks.
- **Ablation.** ``trainer_settings`` ``protocol_ablation`` turns items back to the first release's protocol, for
  measuring what each one brings (``benchmarks/fusion_classification_results.py``): ``lesion_only_sampling``,
  ``per_phase_augmentation``, ``patch_pooling``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pydoc
from time import sleep
from typing import Optional

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import load_pickle
from nnunetv2.configuration import default_num_processes
from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
from nnunetv2.inference.export_prediction import export_prediction_from_logits
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.paths import nnUNet_results
from nnunetv2.utilities.file_path_utilities import check_workers_alive_and_busy
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import autocast, nn
from torch import distributed as dist
from torch._dynamo import OptimizedModule

from nnunet_mvext.architectures.multiphase_fusion_net import MultiPhaseFusionNet
from nnunet_mvext.classification.case_labels import require_labels
from nnunet_mvext.classification.case_prediction import classify_case, select_region
from nnunet_mvext.classification.epoch_metrics import (
    auc_moving_average,
    auc_selection_start,
    epoch_classification_metrics,
)
from nnunet_mvext.classification.fusion_setup import (
    CASE_KEY,
    changes_text,
    check_stored_info,
    differing_keys,
    fusion_model_info,
)
from nnunet_mvext.classification.metrics import classification_metrics, plot_auc_curve
from nnunet_mvext.classification.missing_phases import absent_phases, dataset_record, refuse_missing
from nnunet_mvext.classification.prediction_table import phase_names_of, write_case_predictions
from nnunet_mvext.classification.training_data import (
    SAMPLING_EXPONENTS,
    CaseSamplingDataset,
    RoiCentredDataset,
    balanced_weights_as_drawn,
    cases_in_classification_loss,
    central_component,
    classes_without_loss_cases,
    misalignment_reference,
    phase_consistent,
    with_phase_misalignment,
)
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.planning.fusion_memory import log_fusion_memory
from nnunet_mvext.trainers.settings_trainer import nnUNetTrainerMV

AGGREGATION = ("one patch of the training patch size centred on the most lesion-probable predicted lesion "
               "component (largest sum of lesion probability), features pooled over that component; softmax averaged "
               "over the patch and its mirrored copies")


def cls_encoder_text(width) -> str:
    return (f"; the case class read from a separate encoder shared by the phases ({width} x the plan's widths)"
            if width else "")


def _import_arch_kwargs(configuration_manager: ConfigurationManager) -> dict:
    kwargs = dict(configuration_manager.network_arch_init_kwargs)
    for key in configuration_manager.network_arch_init_kwargs_req_import:
        if kwargs.get(key) is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    return kwargs


def _check_other_folds(plans: dict, configuration: str, trainer_name: str, fold, info: dict) -> None:
    """Folds of one model folder share one plans.json: refuse a fold whose fusion settings differ from trained ones."""
    if nnUNet_results is None:
        return
    base = os.path.join(nnUNet_results, plans["dataset_name"],
                        f"{trainer_name}__{plans['plans_name']}__{configuration}")
    plans_json = os.path.join(base, "plans.json")
    if not os.path.isfile(plans_json):
        return
    with open(plans_json) as f:
        stored = json.load(f).get("configurations", {}).get(configuration, {}).get(CASE_KEY)
    others = [d for d in os.listdir(base) if d.startswith("fold_") and d != f"fold_{fold}" and any(
        n.startswith("checkpoint") for n in os.listdir(os.path.join(base, d)))]
    if stored is not None and others and differing_keys(stored, info):
        raise MVExtError(f"{base} holds folds ({', '.join(sorted(others))}) trained with other fusion settings "
                         f"({changes_text(stored, info)}); all folds of a model folder must share them, because "
                         f"nnU-Net keeps one plans.json per folder. Use a new configuration name (nnunet-mvext "
                         f"add-config ... --name), or set these keys in trainer_settings to the stored values (an "
                         f"absent key to 0 or false; a release may have changed a default, as it did for "
                         f"'shared_encoder' and 'classification_encoder_width').")


def import_reference_phase(dataset_name: str, dataset_json: Optional[dict] = None) -> Optional[str]:
    """The reference phase the dataset was imported on: ``dataset.json``'s ``reference_phase`` (``import-lld``
    writes it; nnU-Net copies dataset.json to the preprocessed folder, so it is there without the raw data), else the
    raw folder's ``import_report.json`` (datasets imported before the key existed), else None."""
    from nnunet_mvext.json_files import read_json
    from nnunet_mvext.lld_mmri.import_release import REPORT

    stored = (dataset_json or {}).get("reference_phase")
    if isinstance(stored, str):
        return stored
    from nnunetv2 import paths

    path = os.path.join(str(paths.nnUNet_raw), dataset_name, REPORT) if paths.nnUNet_raw else None
    if path is None or not os.path.isfile(path):
        return None
    report = read_json(path, "The import report")
    reference = report.get("reference_phase") if isinstance(report, dict) else None
    return reference if isinstance(reference, str) else None


def missing_phases_record(dataset_name: str) -> dict[str, list[int]]:
    """The dataset's missing-phases record as channel indices: the preprocessed folder's copy, else the raw one's."""
    from nnunetv2 import paths

    return dataset_record(*(os.path.join(str(root), dataset_name) for root in (paths.nnUNet_preprocessed,
                                                                              paths.nnUNet_raw) if root))


class nnUNetTrainerFusion(nnUNetTrainerMV):
    """Per-phase encoders, lesion-pooled late fusion (``trainer_settings.fusion``), joint segmentation decoder."""

    defining_settings = ("fusion",)
    settings_scopes = ("fusion",)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        # stored with the plans (plans.json of the model folder) so that the static network builder, and with it
        # nnUNetv2_predict, rebuild the same network; predict-cls reads the copy in each checkpoint
        info = self.case_info
        self.configuration_manager.configuration[CASE_KEY] = info
        self.plans_manager.plans["configurations"][configuration][CASE_KEY] = info
        self.case_class_names = info["class_names"]
        self.lesion_label = info["lesion_label"]
        self.fallback_label = info["fallback_roi_label"]
        self.phase_names = phase_names_of(dataset_json.get("channel_names", {}), info["phase_channels"])
        for key in ("val_auc", "ema_val_auc", "val_macro_f1", "val_kappa"):
            self.logger.local_logger.my_fantastic_logging.setdefault(key, [])
        self.case_labels: dict = {}
        self.class_weights = None
        self.lesion_free_cases: set = set()
        self._best_auc_ema = None
        self._cls_val_dataset = None
        self._cls_val_count = 0
        self.absent: dict = {}
        self._cls_samples = [0, 0]
        self._loaded_checkpoint = None
        ablation = self.trainer_settings.protocol_ablation
        self.lesion_centred_sampling = not info["segmentation"] or "lesion_only_sampling" in ablation
        self.per_phase_augmentation = "per_phase_augmentation" in ablation
        if self.lesion_centred_sampling:
            self.oversample_foreground_percent = 1.0
        self.print_to_log_file(
            f"{self.__class__.__name__}: case classes {self.case_class_names}, fusion '{info['fusion']}', phases "
            f"{dict(zip(self.phase_names, info['phase_channels']))} ("
            f"{'one encoder shared by the phases' if info['shared_encoder'] else 'one encoder per phase'}"
            f"{', one norm scale and shift per phase' if info.get('phase_norm') else ''}"
            f"{f', stages below {k} one per phase' if (k := info.get('phase_specific_stages', 0)) else ''}"
            f"{cls_encoder_text(info.get('classification_encoder_width'))}), lesion "
            f"label {self.lesion_label}, fallback label {self.fallback_label}. Classification loss on the samples "
            f"whose patch holds the lesion; "
            + ("intensity augmentation drawn per phase (ablation)" if self.per_phase_augmentation else
               "intensity augmentation drawn once per sample for all phases")
            + ("; every sample lesion-centred" + ("" if info["segmentation"] else " (classification only)")
               if self.lesion_centred_sampling else "")
            + ("; embedding pooled over the whole patch (ablation)" if info.get("patch_pooling") else "")
            + ("; embedding: lesion mean of the last two stages (ablation)" if info.get("lesion_mean_embedding")
               else f"; embedding: lesion against its {info['lesion_context']} at every stage"
               + (" and on the input intensities" if info.get("input_contrast") else ""))
            + f"; case sampling {self.trainer_settings.case_sampling}, label smoothing "
              f"{self.trainer_settings.label_smoothing}, phase dropout {self.trainer_settings.phase_dropout}, phase "
              f"misalignment augmentation {self.trainer_settings.phase_misalignment_voxels} voxel(s)"
            + (f". Protocol ablation: {', '.join(ablation)}" if ablation else "") + ".",
            add_timestamp=False)

    def check_before_nnunet_init(self, plans: dict, configuration: str, fold, dataset_json: dict, settings) -> None:
        """The model description (:meth:`describe_model`), the shared-folder check and this fold's
        ``pretrained_checkpoint`` (:func:`~nnunet_mvext.classification.pretrained.resolve_pretrained_checkpoint`),
        before any folder exists."""
        self.case_info = self.describe_model(plans, configuration, dataset_json, settings)
        self.missing_record = missing_phases_record(plans["dataset_name"])
        if settings.missing_phases == "refuse":
            refuse_missing(self.missing_record, dataset_json.get("classification", {}).get("labels", {}),
                           f"dataset {plans['dataset_name']}")
        _check_other_folds(plans, configuration, self.__class__.__name__, fold, self.case_info)
        self.pretrained = None
        if settings.pretrained_checkpoint is not None:
            from nnunet_mvext.classification.pretrained import resolve_pretrained_checkpoint

            self.pretrained = resolve_pretrained_checkpoint(
                settings.pretrained_checkpoint, fold,
                f"configuration '{configuration}' of plans '{plans.get('plans_name', '?')}'")

    @classmethod
    def describe_model(cls, plans: dict, configuration: str, dataset_json: dict, settings) -> dict:
        """The stored model description (:func:`fusion_model_info`), validated before any folder is created.
        A variant with another network extends it with the keys its ``build_network_architecture`` reads."""
        if settings.views is not None and "views" not in cls.settings_defaults:
            raise MVExtError(f"trainer_settings of configuration '{configuration}': 'views' is {settings.views}, but "
                             f"{cls.__name__} trains 3D phase encoders and would ignore it. Allowed: null, or train "
                             f"a multi-view trainer "
                             f"(nnUNetTrainerMultiView{cls.__name__[len('nnUNetTrainerFusion'):]}).")
        return fusion_model_info(plans, configuration, dataset_json, settings)

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        info = check_stored_info(configuration_manager.configuration.get(CASE_KEY),
                                 "The configuration of these plans")
        head_options = {"dsn_lambda": info["dsn_lambda"], "detach_beta": info["abaf_detach_beta"]}
        net = MultiPhaseFusionNet(configuration_manager.network_arch_class_name,
                                  _import_arch_kwargs(configuration_manager), num_input_channels, num_output_channels,
                                  info["num_classes"], info["fusion"], info["phase_channels"],
                                  info["shared_encoder"], enable_deep_supervision, head_options,
                                  info.get("segmentation", True), info.get("patch_pooling", False),
                                  info["lesion_context"], lesion_mean_only=info.get("lesion_mean_embedding", False),
                                  phase_norm=info.get("phase_norm", False),
                                  phase_specific_stages=info.get("phase_specific_stages", 0),
                                  input_contrast=info.get("input_contrast", False),
                                  classification_encoder_width=info.get("classification_encoder_width", 0.0))
        net.apply(net.initialize)
        return net

    def _unwrapped(self) -> MultiPhaseFusionNet:
        mod = self.network.module if self.is_ddp else self.network
        return mod._orig_mod if isinstance(mod, OptimizedModule) else mod

    def set_deep_supervision_enabled(self, enabled: bool):
        if self._unwrapped().decoder is not None:
            super().set_deep_supervision_enabled(enabled)

    def initialize(self):
        super().initialize()
        net = self._unwrapped()
        net.phase_dropout = float(self.trainer_settings.phase_dropout)
        net.head.label_smoothing = float(self.trainer_settings.label_smoothing)
        if self.pretrained is not None:
            from nnunet_mvext.classification.pretrained import load_segmentation_weights

            for line in load_segmentation_weights(self._unwrapped(), self.pretrained["path"]):
                self.print_to_log_file(line)
            if self.pretrained["stored_fold"] is None:
                self.print_to_log_file("WARNING: the pretrained checkpoint names no fold (init_args['fold']): that it "
                                       "did not train on this fold's validation cases cannot be checked")

    # ---------------------------------------------------------------- data
    def get_training_transforms(self, *args, **kwargs):
        transforms = nnUNetTrainerMV.get_training_transforms(*args, **kwargs)
        transforms = transforms if self.per_phase_augmentation else phase_consistent(transforms)
        voxels = self.trainer_settings.phase_misalignment_voxels
        if not voxels:
            return transforms
        groups, channel_names = self.case_info["phase_channels"], self.dataset_json.get("channel_names", {})
        fixed = misalignment_reference(groups, channel_names, import_reference_phase(self.plans_manager.dataset_name,
                                                                                     self.dataset_json))
        self.print_to_log_file(f"phase misalignment augmentation: phase {phase_names_of(channel_names, groups)[fixed]} "
                               f"stays fixed (the phase the label is drawn on: the import's reference phase, else the "
                               f"first)")
        return with_phase_misalignment(transforms, groups, voxels, fixed_phase=fixed)

    def get_tr_and_val_datasets(self):
        dataset_tr, dataset_val = super().get_tr_and_val_datasets()
        if self.trainer_settings.case_sampling != "uniform":
            dataset_tr = CaseSamplingDataset(dataset_tr, self.case_labels,
                                             SAMPLING_EXPONENTS[self.trainer_settings.case_sampling])
            drawn = np.bincount([self.case_labels[k] for k in dataset_tr.identifiers],
                                minlength=len(self.case_class_names))
            self.print_to_log_file(f"case sampling {self.trainer_settings.case_sampling}: classes drawn with "
                                   f"frequencies {dict(zip(self.case_class_names, np.round(drawn / drawn.sum(), 3)))}")
        if not self.lesion_centred_sampling:
            return dataset_tr, dataset_val
        return (RoiCentredDataset(dataset_tr, self.lesion_label, self.fallback_label),
                RoiCentredDataset(dataset_val, self.lesion_label, self.fallback_label))

    def _region_of_interest(self, target, keys) -> tuple[torch.Tensor, torch.Tensor]:
        """``(roi (B, 1, *S) float, sample_weights (B,))`` from the full-resolution target of a batch: per sample one
        connected component of the lesion label (:func:`central_component`; the fallback label for lesion-free cases
        when set); weight 1 for samples whose patch holds it, 0 for the others."""
        seg = target[0] if isinstance(target, list) else target
        roi = seg == self.lesion_label
        if self.fallback_label is not None:
            fallback = torch.tensor([k in self.lesion_free_cases for k in keys], device=seg.device)
            fallback = fallback.view(-1, *[1] * (seg.ndim - 1))
            roi = torch.where(fallback, seg == self.fallback_label, roi)
        masks = roi.cpu().numpy()
        single = np.stack([central_component(m[0])[None] for m in masks])
        roi = torch.from_numpy(single).to(seg.device)
        has_roi = roi.flatten(1).any(1)
        return roi.float(), has_roi.float()

    # ---------------------------------------------------------------- training
    def on_train_start(self):
        tr_keys, val_keys = self.do_split()
        source = f"dataset.json of {self.plans_manager.dataset_name}"
        self.case_labels = require_labels(self.dataset_json, list(tr_keys) + list(val_keys), source)
        locations = {k: load_pickle(os.path.join(self.preprocessed_dataset_folder, k + ".pkl"))["class_locations"]
                     for k in list(tr_keys) + list(val_keys)}
        self.absent = self.absent_of_cases(list(tr_keys) + list(val_keys))
        if self.absent:
            self.print_to_log_file(f"{len(self.absent)} case(s) miss a phase (missing_phases.json); their missing "
                                   f"phases are left out of the fusion (missing_phases: zero): "
                                   f"{', '.join(sorted(self.absent)[:10])}{' ...' if len(self.absent) > 10 else ''}")
        self.lesion_free_cases = {k for k, loc in locations.items() if not len(loc.get(self.lesion_label, ()))}
        if self.lesion_free_cases:
            how = (f"localised by the fallback label {self.fallback_label}" if self.fallback_label is not None else
                   "left out of the classification loss (set trainer_settings 'fallback_roi_label' to localise them)")
            self.print_to_log_file(f"{len(self.lesion_free_cases)} case(s) have no voxel of the lesion label "
                                   f"{self.lesion_label}, {how}: {', '.join(sorted(self.lesion_free_cases))}")
        loss_keys = cases_in_classification_loss({k: locations[k] for k in tr_keys}, self.lesion_label,
                                                 self.fallback_label)
        for warning in classes_without_loss_cases({k: self.case_labels[k] for k in tr_keys}, loss_keys,
                                                  self.case_class_names, self.fallback_label):
            self.print_to_log_file(f"WARNING: {warning}")
        if self.trainer_settings.class_weighting == "balanced":
            # balanced over the cases as they are drawn: with case_sampling, each case counts as often as it is listed
            weights = balanced_weights_as_drawn({k: self.case_labels[k] for k in tr_keys}, loss_keys,
                                                SAMPLING_EXPONENTS[self.trainer_settings.case_sampling],
                                                len(self.case_class_names))
            self.class_weights = torch.tensor(weights, dtype=torch.float32, device=self.device)
            self.print_to_log_file(f"class weights (balanced over the {len(loss_keys)} training cases that enter the "
                                   f"classification loss, as drawn by case_sampling "
                                   f"{self.trainer_settings.case_sampling}): {np.round(weights, 3).tolist()}")
        if self.fold == "all":
            self.print_to_log_file("WARNING: fold 'all' trains on every case, so its validation cases are training "
                                   "cases: no checkpoint_best_auc.pth is written and the classification summary is "
                                   "marked as computed on training cases.")
        super().on_train_start()
        log_fusion_memory(self, self._unwrapped())
        self._cls_val_dataset = self.dataset_class(self.preprocessed_dataset_folder, sorted(val_keys))

    def absent_of_cases(self, keys) -> dict[str, list[bool]]:
        """``{case: absent per phase}`` of the ``keys`` that miss a phase in the dataset's record (``missing_record``,
        read in :meth:`check_before_nnunet_init`, so also for ``--val``, which skips :meth:`on_train_start`)."""
        groups = self.case_info["phase_channels"]
        absent = {k: absent_phases(self.missing_record.get(k, []), groups) for k in keys}
        return {k: a for k, a in absent.items() if any(a)}

    def on_train_epoch_start(self):
        self._cls_samples = [0, 0]
        super().on_train_epoch_start()

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) else \
            target.to(self.device, non_blocking=True)
        y = torch.tensor([self.case_labels[k] for k in batch["keys"]], dtype=torch.long, device=self.device)
        roi, sample_weights = self._region_of_interest(target, batch["keys"])
        absent = self._absent_phases(batch["keys"])
        self._cls_samples[0] += int(sample_weights.sum().item())
        self._cls_samples[1] += len(y)
        net = self._unwrapped()
        self.optimizer.zero_grad(set_to_none=True)
        net.classification_output = True
        try:
            with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
                seg, head = self.network(data, roi, absent)
                loss = self.trainer_settings.classification_loss_weight * net.head.loss(
                    head, y, self.class_weights, sample_weights)
                if seg is not None:
                    loss = loss + self.loss(seg, target)
        finally:
            net.classification_output = False
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy()}

    def _absent_phases(self, keys) -> Optional[torch.Tensor]:
        """(B, P) bool: the phases each case of a batch misses (None when no case of the dataset misses any)."""
        if not self.absent:
            return None
        p = len(self.case_info["phase_channels"])
        return torch.tensor([self.absent.get(k, [False] * p) for k in keys], dtype=torch.bool, device=self.device)

    def on_train_epoch_end(self, train_outputs: list):
        super().on_train_epoch_end(train_outputs)
        used, total = self._cls_samples
        self.print_to_log_file(f"classification loss on {used} of {total} training samples (patches holding the "
                               f"region of interest)")

    def validation_step(self, batch: dict) -> dict:
        net = self._unwrapped()
        if net.decoder is not None:
            return super().validation_step(batch)
        # classification only: the loss of the lesion-centred validation batch; no pseudo Dice (nan)
        n = len(self.label_manager.foreground_labels)
        out = {"tp_hard": np.zeros(n), "fp_hard": np.zeros(n), "fn_hard": np.zeros(n)}
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device) for t in target] if isinstance(target, list) else target.to(self.device)
        roi, has_roi = self._region_of_interest(target, batch["keys"])
        y = torch.tensor([self.case_labels[k] for k in batch["keys"]], dtype=torch.long, device=self.device)
        with torch.no_grad(), (autocast(self.device.type, enabled=True) if self.device.type == "cuda"
                               else dummy_context()):
            _, head = net.forward_with_classification(data, roi, self._absent_phases(batch["keys"]))
            out["loss"] = net.head.loss(head, y, self.class_weights, has_roi).detach().cpu().numpy()
        return out

    def classification_validation(self) -> tuple[list, np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """Every validation case once (this rank's share under DDP), classified from one patch centred on its
        ground-truth lesion (the fallback label's region for lesion-free cases, when set), without mirroring:
        ``(case ids, labels (N,), probabilities (N, K), beta (N, P) or None)``. Cases without a region are skipped."""
        net = self._unwrapped()
        keys = list(self._cls_val_dataset.identifiers)
        if self.is_ddp:
            keys = keys[self.local_rank:: dist.get_world_size()]
        cases, probs, betas = [], [], []
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            for k in keys:
                data, seg, _, _ = self._cls_val_dataset.load_case(k)
                region = select_region(np.asarray(seg[0]), self.lesion_label, data.shape[1:], None,
                                       self.fallback_label)
                if region.mask is None:
                    continue
                # only the patch around the lesion is read from nnU-Net's (lazily sliced) case array
                result = classify_case(net, data, region, self.configuration_manager.patch_size, None, self.device,
                                       self.absent.get(k))
                cases.append(k)
                probs.append(result["probabilities"])
                betas.append(result["beta"])
        labels = np.array([self.case_labels[k] for k in cases], dtype=int)
        k = len(self.case_class_names)
        probs = np.stack(probs) if probs else np.zeros((0, k))
        beta = np.stack(betas) if betas and betas[0] is not None else None
        return cases, labels, probs, beta

    def on_validation_epoch_end(self, val_outputs: list):
        super().on_validation_epoch_end(val_outputs)
        _, labels, probs, beta = self.classification_validation()
        if self.is_ddp:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (labels, probs, beta))
            labels = np.concatenate([g[0] for g in gathered])
            probs = np.concatenate([g[1] for g in gathered])
            betas = [g[2] for g in gathered if g[2] is not None and len(g[0])]
            beta = np.concatenate(betas) if betas else None
        metrics = epoch_classification_metrics(labels, probs)
        auc = metrics["macro_auc"]
        self.logger.log("val_auc", auc, self.current_epoch)
        ema = auc_moving_average(self.logger.get_value("val_auc", step=None)[: self.current_epoch + 1])
        self.logger.log("ema_val_auc", ema, self.current_epoch)
        self.logger.log("val_macro_f1", metrics["macro_f1"], self.current_epoch)
        self.logger.log("val_kappa", metrics["cohen_kappa"], self.current_epoch)
        self._cls_val_count = len(labels)
        if beta is not None and len(beta):
            self.print_to_log_file("mean phase weights beta (validation cases): " + ", ".join(
                f"{n} {b:.3f}" for n, b in zip(self.phase_names, beta.mean(0))))

    def on_epoch_end(self):
        auc = self.logger.get_value("val_auc", step=-1)
        ema = self.logger.get_value("ema_val_auc", step=-1)
        f1 = self.logger.get_value("val_macro_f1", step=-1)
        kappa = self.logger.get_value("val_kappa", step=-1)

        def r(v):
            return None if v is None else np.round(v, 4)

        self.print_to_log_file(f"classification of the {self._cls_val_count} validation cases (one patch centred on "
                               f"the ground-truth lesion): macro AUC {r(auc)} (moving average {r(ema)}), macro-F1 "
                               f"{r(f1)}, kappa {r(kappa)}")
        start = auc_selection_start(self.num_epochs)  # no selection on the first epochs' few AUCs
        if self._best_auc_ema is None:  # after --c: the best of the selectable epochs before
            earlier = [v for e, v in enumerate(self.logger.get_value("ema_val_auc", step=None)[:self.current_epoch])
                       if v is not None and e >= start]
            self._best_auc_ema = max(earlier) if earlier else None
        if ema is not None and self.current_epoch >= start and (self._best_auc_ema is None or ema > self._best_auc_ema):
            self._best_auc_ema = ema
            if self.fold != "all":
                self.print_to_log_file(f"New best moving-average AUC: {np.round(ema, 4)} (selected on this fold's "
                                       f"validation cases: not an unbiased estimate)")
                self.save_checkpoint(os.path.join(self.output_folder, "checkpoint_best_auc.pth"))
        if self.local_rank == 0:
            plot_auc_curve(self.logger.get_value("val_auc", step=None), self.logger.get_value("ema_val_auc", step=None),
                           os.path.join(self.output_folder, "progress_classification.png"))
        super().on_epoch_end()

    def on_train_end(self):
        super().on_train_end()
        self._cls_val_dataset = None
        self._loaded_checkpoint = None  # a --c run validates the weights it trained on, not those it resumed from

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_extras(self) -> dict:
        """The model description (predict-cls rebuilds and compares folds from it), the fold's training cases
        (predict-cls warns about input cases a fold trained on) and its validation cases (a ``checkpoint_best*`` was
        selected on them: predict-cls flags those input cases, evaluate-cls warns)."""
        training, validation = self.do_split()
        return {**super().checkpoint_extras(), CASE_KEY: self.case_info, "training_case_ids": sorted(training),
                "validation_case_ids": sorted(validation), "fold": self.fold}

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoints, except ``checkpoint_best.pth`` of a classification-only model (no decoder): nnU-Net
        selects it on the EMA pseudo Dice, which is NaN without a segmentation, so it would hold epoch 0's weights
        (and nnU-Net's ``--c`` before the first ``checkpoint_latest.pth`` would resume from them)."""
        if os.path.basename(filename) == "checkpoint_best.pth" and not self.case_info.get("segmentation", True):
            return
        super().save_checkpoint(filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        if isinstance(filename_or_checkpoint, str):
            name = os.path.basename(filename_or_checkpoint)
            if name == "checkpoint_best.pth" and not self.case_info.get("segmentation", True):
                raise MVExtError(f"{filename_or_checkpoint}: a classification-only model (trainer_settings "
                                 f"'segmentation': false) has no checkpoint selected on the pseudo Dice; a "
                                 f"checkpoint_best.pth written by an earlier release holds epoch 0's weights. For "
                                 f"--val_best use nnunet-mvext predict-cls -chk checkpoint_best_auc.pth instead; for "
                                 f"--c without a checkpoint_latest.pth, delete this file (nnU-Net then starts anew).")
            self._loaded_checkpoint = name
        super().load_checkpoint(filename_or_checkpoint)

    def check_checkpoint(self, checkpoint: dict, source: str) -> None:
        """Refuse a checkpoint trained with other fusion settings than this fold's before its weights load (``--c``
        or ``--val`` on a fold trained before a default changed would otherwise stop at a missing weight)."""
        stored = checkpoint.get(CASE_KEY)
        if stored is not None and differing_keys(stored, self.case_info):
            raise MVExtError(f"{source} was trained with other fusion settings "
                             f"({changes_text(stored, self.case_info)}) than trainer_settings of "
                             f"'{self.configuration_name}' give now. Set these keys in trainer_settings to the stored "
                             f"values (an absent key to 0 or false; a release may "
                             f"have changed a default, as it did for 'classification_encoder_width'), or train the "
                             f"fold again without --c.")

    # ---------------------------------------------------------------- final validation
    def perform_actual_validation(self, save_probabilities: bool = False):
        """nnU-Net's validation (sliding window, export, summary.json) with one sliding window per case, reused for
        the classification; see the module docstring."""
        self.set_deep_supervision_enabled(False)
        self.network.eval()
        net = self._unwrapped()
        _, val_keys = self.do_split()
        # nnUNetv2_train --val skips on_train_start: the record of the validation cases is read here too
        missing = self.absent_of_cases(val_keys)
        if any(k not in self.absent for k in missing):
            self.print_to_log_file(f"{len(missing)} validation case(s) miss a phase (missing_phases.json); their "
                                   f"missing phases are left out of the fusion (missing_phases: zero): "
                                   f"{', '.join(sorted(missing)[:10])}{' ...' if len(missing) > 10 else ''}")
        self.absent = {**self.absent, **missing}
        if self.is_ddp:
            val_keys = val_keys[self.local_rank:: dist.get_world_size()]
        dataset = self.dataset_class(self.preprocessed_dataset_folder, val_keys)
        mirroring = self.trainer_settings.validation_mirroring
        mirror_axes = self.inference_allowed_mirroring_axes if mirroring else None
        if not mirroring:
            self.print_to_log_file("final validation without test-time mirroring (validation_mirroring: false)")
        folder = os.path.join(self.output_folder, "validation")
        os.makedirs(folder, exist_ok=True)
        predictor = None
        if net.decoder is not None:
            predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                        perform_everything_on_device=True, device=self.device, verbose=False,
                                        verbose_preprocessing=False, allow_tqdm=False)
            predictor.manual_initialization(self.network, self.plans_manager, self.configuration_manager, None,
                                            self.dataset_json, self.__class__.__name__,
                                            self.inference_allowed_mirroring_axes)
        results, case_results = [], {}
        with multiprocessing.get_context("spawn").Pool(default_num_processes) as export_pool:
            workers = list(export_pool._pool)
            for k in dataset.identifiers:
                while check_workers_alive_and_busy(export_pool, workers, results, allowed_num_queued=2):
                    sleep(0.1)
                self.print_to_log_file(f"predicting {k}")
                data, seg, _, properties = dataset.load_case(k)
                data = torch.from_numpy(np.asarray(data[:]))
                if predictor is not None:
                    with torch.no_grad():
                        logits = predictor.predict_sliding_window_return_logits(data).float().cpu()
                    results.append(export_pool.starmap_async(export_prediction_from_logits, (
                        (logits, properties, self.configuration_manager, self.plans_manager, self.dataset_json,
                         os.path.join(folder, k), save_probabilities),)))
                    probabilities = torch.softmax(logits, 0)
                    region = select_region(probabilities.argmax(0).numpy(), self.lesion_label, data.shape[1:],
                                           probabilities[self.lesion_label].numpy(), self.fallback_label)
                else:  # classification only: the ground-truth lesion, as predict-cls --roi with given masks
                    region = select_region(np.asarray(seg[0]), self.lesion_label, data.shape[1:], None,
                                           self.fallback_label)
                case_results[k] = classify_case(net, data, region, self.configuration_manager.patch_size,
                                                mirror_axes, self.device, self.absent.get(k))
            _ = [r.get() for r in results]
        self._finish_validation(folder, predictor is not None, case_results)
        self.set_deep_supervision_enabled(True)

    def _finish_validation(self, folder: str, segmentation: bool, local: dict) -> None:
        if self.is_ddp:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, local)
            local = {k: v for part in gathered for k, v in part.items()}
            dist.barrier()
        if self.local_rank != 0:
            return
        if segmentation:
            metrics = compute_metrics_on_folder(
                os.path.join(self.preprocessed_dataset_folder_base, "gt_segmentations"), folder,
                os.path.join(folder, "summary.json"), self.plans_manager.image_reader_writer_class(),
                self.dataset_json["file_ending"], self.label_manager.foreground_labels,
                self.label_manager.ignore_label, chill=True, num_processes=default_num_processes)
            self.logger.log_summary("final_val/foreground_dice", metrics["foreground_mean"]["Dice"])
            self.print_to_log_file("Validation complete")
            self.print_to_log_file("Mean Validation Dice: ", metrics["foreground_mean"]["Dice"])
        self.write_classification_validation(folder, local)

    def write_classification_validation(self, folder: str, results: dict) -> dict:
        """``classification_summary.json``, ``classification.csv`` and the embeddings of the validation cases."""
        cases = sorted(results)
        labels = require_labels(self.dataset_json, cases, f"dataset.json of {self.plans_manager.dataset_name}")
        y = [labels[c] for c in cases]
        probs = np.stack([results[c]["probabilities"] for c in cases])
        summary = classification_metrics(y, probs, self.case_class_names)
        rois = [results[c]["roi"] for c in cases]
        checkpoint = self._loaded_checkpoint or "the final weights of this training run"
        summary.update({
            "aggregation": AGGREGATION,
            "cases_without_predicted_lesion": [c for c, r in zip(cases, rois) if r != "lesion"],
            "checkpoint": checkpoint,
            "checkpoint_selected_on_these_cases": checkpoint.startswith("checkpoint_best"),
            "computed_on_training_cases": self.fold == "all",
            "pretrained_checkpoint": None if self.pretrained is None else self.pretrained["path"],
            "pretrained_checkpoint_fold": None if self.pretrained is None else self.pretrained["stored_fold"],
        })
        if summary["checkpoint_selected_on_these_cases"]:
            summary["warning"] = (f"{checkpoint} was selected on these validation cases: the metrics are optimistic; "
                                  f"report checkpoint_final.pth or held-out cases.")
        if self.fold == "all":
            summary["warning"] = "fold 'all': these cases were used for training; the metrics are not a validation."
        beta = np.stack([results[c]["beta"] for c in cases]) if results[cases[0]]["beta"] is not None else None
        aux = np.stack([results[c]["aux_probabilities"] for c in cases]) \
            if results[cases[0]]["aux_probabilities"] is not None else None
        if beta is not None:
            summary["mean_beta"] = dict(zip(self.phase_names, np.round(beta.mean(0), 4).tolist()))
        with open(os.path.join(folder, "classification_summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        write_case_predictions(os.path.join(folder, "classification.csv"), cases, probs, self.case_class_names, rois,
                               self.phase_names, beta, aux, y_true=y, provenance={
                                   "checkpoint": checkpoint, "checkpoint_selected_on_these_cases":
                                   int(summary["checkpoint_selected_on_these_cases"]),
                                   "pretrained_checkpoint": summary["pretrained_checkpoint"] or "",
                                   "pretrained_checkpoint_fold": summary["pretrained_checkpoint_fold"] or ""},
                               absent=None if aux is None or not self.absent else np.array(
                                   [self.absent.get(c, [False] * len(self.case_info["phase_channels"]))
                                    for c in cases]))
        np.savez(os.path.join(folder, "classification_embeddings.npz"), case_ids=np.array(cases),
                 embeddings=np.stack([results[c]["embedding"] for c in cases]), labels=np.array(y))
        self.print_to_log_file(f"Case classification on {len(cases)} validation cases: AUC {summary['auc']}, "
                               f"accuracy {summary['accuracy']:.4f}" + (f". {summary['warning']}" if "warning" in
                                                                        summary else ""))
        if summary.get("collapse_warning"):
            self.print_to_log_file(f"WARNING: {summary['collapse_warning']}")
        return summary


class nnUNetTrainerFusionConcat(nnUNetTrainerFusion):
    """``fusion: concat``: MLP on the concatenated phase embeddings."""

    settings_defaults = {"fusion": "concat"}


class nnUNetTrainerFusionDSN(nnUNetTrainerFusion):
    """``fusion: dsn``: concat head plus one auxiliary classifier per phase."""

    settings_defaults = {"fusion": "dsn"}


class nnUNetTrainerFusionABAF(nnUNetTrainerFusion):
    """``fusion: abaf``: attention-based adaptive fusion with per-sample phase weights."""

    settings_defaults = {"fusion": "abaf"}


class nnUNetTrainerFusionDecision(nnUNetTrainerFusion):
    """``fusion: decision``: one classifier per phase, log-probabilities fused by learned phase weights."""

    settings_defaults = {"fusion": "decision"}
