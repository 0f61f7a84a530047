"""Multi-phase case classification trained by nnU-Net's loop: ``nnUNetTrainerFusionConcat``, ``…DSN``, ``…ABAF``.

The network is :class:`~nnunet_mvext.architectures.multiphase_fusion_net.MultiPhaseFusionNet` built from the
configuration's plan. Each training step adds the fusion head's classification loss (weighted by
``classification_loss_weight``) to nnU-Net's deep-supervised segmentation loss. Data come from nnU-Net's data loader
and augmentation unchanged: a spatial transform is drawn once per sample and applied to all its channels, so all
phases of a case get the same spatial transform. Patches are centred on the lesion label (``lesion_label``): the
dataset handed to nnU-Net's loader reports only that label's locations for foreground sampling, and
``oversample_foreground_percent`` defaults to 1. Class imbalance: ``class_weighting: balanced`` (default) weights
the cross-entropy by ``n / (K n_k)`` from the fold's training cases.

Per epoch the validation patches' AUC and its moving average (0.9, as nnU-Net's pseudo Dice) are logged, plotted in
``progress_classification.png`` next to ``progress.png``, and ``checkpoint_best_auc.pth`` is written whenever the
moving average improves. After training (and with ``--val``), besides nnU-Net's segmentation validation,
``validation/classification_summary.json``, ``validation/classification.csv`` and
``validation/classification_embeddings.npz`` are written from whole validation cases, classified as
:mod:`nnunet_mvext.classification.case_prediction` describes.
"""

from __future__ import annotations

import json
import os
import pydoc

import numpy as np
import torch
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import autocast, nn
from torch import distributed as dist
from torch._dynamo import OptimizedModule

from nnunet_mvext.architectures.multiphase_fusion_net import MultiPhaseFusionNet, validate_phase_channels
from nnunet_mvext.classification.case_prediction import classify_case
from nnunet_mvext.classification.case_labels import class_block, require_labels
from nnunet_mvext.classification.metrics import classification_metrics, plot_auc_curve, write_predictions_csv
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.trainers.settings_trainer import nnUNetTrainerMV

CASE_KEY = "case_classification"
AGGREGATION = ("one patch of the training patch size centred on the largest predicted lesion component (volume "
               "centre if none, or if trained with segmentation: false), softmax averaged over the patch and its "
               "mirrored copies")


def resolve_lesion_label(setting, labels: dict) -> int:
    """The segmentation label classification patches are centred on."""
    values = {int(v) for v in labels.values() if not isinstance(v, (list, tuple))}
    if setting is not None:
        if setting not in values or setting == 0:
            raise MVExtError(f"trainer_settings 'lesion_label' is {setting}, not a foreground label of this dataset "
                             f"(labels: {labels}).")
        return int(setting)
    if "lesion" in labels and not isinstance(labels["lesion"], (list, tuple)):
        return int(labels["lesion"])
    return max(values)


class LesionCentredDataset:
    """Wraps an nnU-Net dataset so that foreground sampling uses only the lesion label's locations."""

    def __init__(self, dataset, lesion_label: int):
        self.dataset = dataset
        self.lesion_label = lesion_label

    def __getattr__(self, name):
        if name in ("dataset", "lesion_label"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def load_case(self, identifier):
        data, seg, seg_prev, properties = self.dataset.load_case(identifier)
        locations = properties.get("class_locations") or {}
        lesion = locations.get(self.lesion_label)
        if lesion is not None and len(lesion) > 0:
            properties = {**properties, "class_locations": {self.lesion_label: lesion}}
        return data, seg, seg_prev, properties


def _import_arch_kwargs(configuration_manager: ConfigurationManager) -> dict:
    kwargs = dict(configuration_manager.network_arch_init_kwargs)
    for key in configuration_manager.network_arch_init_kwargs_req_import:
        if kwargs.get(key) is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    return kwargs


class nnUNetTrainerFusion(nnUNetTrainerMV):
    """Per-phase encoders, late fusion (``trainer_settings.fusion``), joint segmentation decoder."""

    settings_defaults = {"oversample_foreground_percent": 1.0}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.label_manager.has_regions:
            raise MVExtError("Fusion trainers need label-based (not region-based) segmentation: the lesion is found "
                             "as one label of the predicted segmentation.")
        source = f"dataset.json of {self.plans_manager.dataset_name}"
        block = class_block(dataset_json, source)
        s = self.trainer_settings
        n_channels = len(dataset_json.get("channel_names", dataset_json.get("modality", {})))
        phases = validate_phase_channels(s.phase_channels or [[c] for c in range(n_channels)], n_channels,
                                         s.shared_encoder)
        self.case_class_names = [block["class_names"][str(i)] for i in range(len(block["class_names"]))]
        self.lesion_label = resolve_lesion_label(s.lesion_label, dataset_json["labels"])
        info = {"num_classes": len(self.case_class_names), "class_names": self.case_class_names,
                "fusion": s.fusion, "phase_channels": phases, "shared_encoder": s.shared_encoder,
                "dsn_lambda": s.dsn_lambda, "abaf_detach_beta": s.abaf_detach_beta,
                "lesion_label": self.lesion_label, "segmentation": s.segmentation}
        # stored with the plans (plans.json of the model folder) so that the static network builder, and with it
        # nnUNetv2_predict and predict-cls, rebuild the same network
        self.configuration_manager.configuration[CASE_KEY] = info
        self.plans_manager.plans["configurations"][configuration][CASE_KEY] = info
        for key in ("val_auc", "ema_val_auc"):
            self.logger.local_logger.my_fantastic_logging.setdefault(key, [])
        self.case_labels: dict = {}
        self.class_weights = None
        self._best_auc_ema = None
        self.print_to_log_file(f"{self.__class__.__name__}: case classes {self.case_class_names}, fusion "
                               f"'{s.fusion}', phases {phases}, lesion label {self.lesion_label}", add_timestamp=False)

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        info = configuration_manager.configuration.get(CASE_KEY)
        if info is None:
            raise MVExtError(f"The configuration has no '{CASE_KEY}' entry: these plans were not written by a fusion "
                             f"trainer. Use the plans.json of the trained model folder.")
        head_options = {"dsn_lambda": info["dsn_lambda"], "detach_beta": info["abaf_detach_beta"]}
        net = MultiPhaseFusionNet(configuration_manager.network_arch_class_name,
                                  _import_arch_kwargs(configuration_manager), num_input_channels, num_output_channels,
                                  info["num_classes"], info["fusion"], info["phase_channels"],
                                  info["shared_encoder"], enable_deep_supervision, head_options,
                                  info.get("segmentation", True))
        net.apply(net.initialize)
        return net

    def _unwrapped(self) -> MultiPhaseFusionNet:
        mod = self.network.module if self.is_ddp else self.network
        return mod._orig_mod if isinstance(mod, OptimizedModule) else mod

    def set_deep_supervision_enabled(self, enabled: bool):
        if self._unwrapped().decoder is not None:
            super().set_deep_supervision_enabled(enabled)

    def on_train_start(self):
        tr_keys, val_keys = self.do_split()
        source = f"dataset.json of {self.plans_manager.dataset_name}"
        self.case_labels = require_labels(self.dataset_json, list(tr_keys) + list(val_keys), source)
        if self.trainer_settings.class_weighting == "balanced":
            counts = np.bincount([self.case_labels[k] for k in tr_keys], minlength=len(self.case_class_names))
            weights = len(tr_keys) / (len(counts) * np.maximum(counts, 1))
            self.class_weights = torch.tensor(weights, dtype=torch.float32, device=self.device)
            self.print_to_log_file(f"class weights (balanced): {np.round(weights, 3).tolist()}")
        super().on_train_start()

    def get_tr_and_val_datasets(self):
        dataset_tr, dataset_val = super().get_tr_and_val_datasets()
        return (LesionCentredDataset(dataset_tr, self.lesion_label),
                LesionCentredDataset(dataset_val, self.lesion_label))

    def _case_targets(self, keys) -> torch.Tensor:
        return torch.tensor([self.case_labels[k] for k in keys], dtype=torch.long, device=self.device)

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) else \
            target.to(self.device, non_blocking=True)
        y = self._case_targets(batch["keys"])
        net = self._unwrapped()
        self.optimizer.zero_grad(set_to_none=True)
        net.classification_output = True
        try:
            with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
                seg, head = self.network(data)
                loss = self.trainer_settings.classification_loss_weight * net.head.loss(head, y, self.class_weights)
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

    def validation_step(self, batch: dict) -> dict:
        net = self._unwrapped()
        data = batch["data"].to(self.device, non_blocking=True)
        if net.decoder is not None:
            out = super().validation_step(batch)
        else:  # classification only: no pseudo Dice (logged as nan)
            n = len(self.label_manager.foreground_labels)
            out = {"tp_hard": np.zeros(n), "fp_hard": np.zeros(n), "fn_hard": np.zeros(n)}
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            _, head = net.forward_with_classification(data)
            if net.decoder is None:
                out["loss"] = net.head.loss(head, self._case_targets(batch["keys"]), self.class_weights)
                out["loss"] = out["loss"].detach().cpu().numpy()
        out["cls_probs"] = torch.softmax(head["logits"].float(), 1).cpu().numpy()
        out["cls_labels"] = np.array([self.case_labels[k] for k in batch["keys"]])
        return out

    def on_validation_epoch_end(self, val_outputs: list):
        probs = np.concatenate([o.pop("cls_probs") for o in val_outputs])
        labels = np.concatenate([o.pop("cls_labels") for o in val_outputs])
        super().on_validation_epoch_end(val_outputs)
        if self.is_ddp:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (probs, labels))
            probs = np.concatenate([g[0] for g in gathered])
            labels = np.concatenate([g[1] for g in gathered])
        auc = classification_metrics(labels, probs, self.case_class_names)["auc"]
        history = self.logger.get_value("ema_val_auc", step=None)
        previous = history[-1] if self.current_epoch > 0 and len(history) >= self.current_epoch else None
        ema = auc if previous is None else (previous if auc is None else 0.9 * previous + 0.1 * auc)
        self.logger.log("val_auc", auc, self.current_epoch)
        self.logger.log("ema_val_auc", ema, self.current_epoch)

    def on_epoch_end(self):
        auc = self.logger.get_value("val_auc", step=-1)
        ema = self.logger.get_value("ema_val_auc", step=-1)
        self.print_to_log_file("val AUC (patches)", None if auc is None else np.round(auc, 4),
                               "moving average", None if ema is None else np.round(ema, 4))
        if self._best_auc_ema is None:  # after --c: the best of the epochs before
            earlier = [v for v in self.logger.get_value("ema_val_auc", step=None)[:-1] if v is not None]
            self._best_auc_ema = max(earlier) if earlier else None
        if ema is not None and (self._best_auc_ema is None or ema > self._best_auc_ema):
            self._best_auc_ema = ema
            self.print_to_log_file(f"New best moving-average AUC: {np.round(ema, 4)}")
            self.save_checkpoint(os.path.join(self.output_folder, "checkpoint_best_auc.pth"))
        if self.local_rank == 0:
            plot_auc_curve(self.logger.get_value("val_auc", step=None), self.logger.get_value("ema_val_auc", step=None),
                           os.path.join(self.output_folder, "progress_classification.png"))
        super().on_epoch_end()

    def perform_actual_validation(self, save_probabilities: bool = False):
        if self._unwrapped().decoder is not None:
            super().perform_actual_validation(save_probabilities)
        if self.local_rank == 0:
            self.set_deep_supervision_enabled(False)
            try:
                self.validate_classification()
            finally:
                self.set_deep_supervision_enabled(True)

    def validate_classification(self) -> dict:
        """Classify every validation case as inference does; write the summary, the CSV and the embeddings."""
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        _, val_keys = self.do_split()
        labels = require_labels(self.dataset_json, val_keys, f"dataset.json of {self.plans_manager.dataset_name}")
        net = self._unwrapped()
        net.eval()
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                    perform_everything_on_device=True, device=self.device, verbose=False,
                                    verbose_preprocessing=False, allow_tqdm=False)
        predictor.manual_initialization(net, self.plans_manager, self.configuration_manager, None,
                                        self.dataset_json, self.__class__.__name__,
                                        self.inference_allowed_mirroring_axes)
        dataset = self.dataset_class(self.preprocessed_dataset_folder, val_keys,
                                     folder_with_segs_from_previous_stage=self.folder_with_segs_from_previous_stage)
        cases, probs, embeddings, found = [], [], [], []
        for k in dataset.identifiers:
            data = torch.from_numpy(np.asarray(dataset.load_case(k)[0][:]))
            seg = None
            if net.decoder is not None:
                with torch.no_grad():
                    seg = predictor.predict_sliding_window_return_logits(data).argmax(0).cpu().numpy()
            result = classify_case(net, data, seg, self.lesion_label, self.configuration_manager.patch_size,
                                   self.inference_allowed_mirroring_axes, self.device)
            cases.append(k)
            probs.append(result["probabilities"])
            embeddings.append(result["embedding"])
            found.append(result["lesion_found"])
        probs = np.stack(probs)
        y = [labels[c] for c in cases]
        summary = classification_metrics(y, probs, self.case_class_names)
        summary.update({"aggregation": AGGREGATION, "cases_without_predicted_lesion": [c for c, f in zip(cases, found)
                                                                                         if not f]})
        folder = os.path.join(self.output_folder, "validation")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "classification_summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        write_predictions_csv(os.path.join(folder, "classification.csv"), cases, probs, self.case_class_names, found, y)
        np.savez(os.path.join(folder, "classification_embeddings.npz"), case_ids=np.array(cases),
                 embeddings=np.stack(embeddings), labels=np.array(y))
        self.print_to_log_file(f"Case classification on {len(cases)} validation cases: AUC {summary['auc']}, "
                               f"accuracy {summary['accuracy']:.4f}")
        return summary


class nnUNetTrainerFusionConcat(nnUNetTrainerFusion):
    """``fusion: concat``: MLP on the concatenated phase embeddings."""

    settings_defaults = {**nnUNetTrainerFusion.settings_defaults, "fusion": "concat"}


class nnUNetTrainerFusionDSN(nnUNetTrainerFusion):
    """``fusion: dsn``: concat head plus one auxiliary classifier per phase."""

    settings_defaults = {**nnUNetTrainerFusion.settings_defaults, "fusion": "dsn"}


class nnUNetTrainerFusionABAF(nnUNetTrainerFusion):
    """``fusion: abaf``: attention-based adaptive fusion with per-sample phase weights."""

    settings_defaults = {**nnUNetTrainerFusion.settings_defaults, "fusion": "abaf"}
