"""What the fusion trainers change in nnU-Net's data pipeline, and nothing else.

**Phase-consistent intensity augmentation.** nnU-Net draws the parameters of Gaussian blur, brightness, contrast,
low resolution and gamma independently per channel, i.e. per phase. The case class of multi-phase data is an
inter-phase enhancement pattern, so a +-25 % contrast change of one phase alone is label noise.
:func:`phase_consistent` takes nnU-Net's own training transforms and sets ``synchronize_channels`` on those five, so
one set of parameters per sample is applied to every phase. Where nnU-Net applies a transform to each channel with
probability ``p_per_channel`` (blur, low resolution: 0.5), the sample-level probability is multiplied by it instead,
so each phase is still transformed as often as before, only now together. Gaussian noise stays independent per
phase (it is not a contrast change). Spatial transforms and mirroring were already drawn once per sample.

**Region-centred sampling.** :class:`RoiCentredDataset` wraps an nnU-Net dataset so that nnU-Net's foreground
sampling picks only the region-of-interest label's locations: the lesion, or for cases without lesion voxels the
fallback label when one is set. The fusion trainers use it for the lesion-centred validation patches of the
per-epoch classification metric, and for training when ``segmentation`` is false (no segmentation loss to keep
nnU-Net's sampling for).

**Cases that enter the classification loss, and the class weights.** A sample enters the classification loss only
when its patch holds the region of interest, so a training case without lesion voxels (and without voxels of the
``fallback_roi_label``, if one is set) never does (:func:`cases_in_classification_loss`). A class all of whose
training cases are such cases drops out of the loss: the head cannot learn it. :func:`classes_without_loss_cases`
names each such class for a warning in the training log (a warning, not a refusal: it is known only once nnU-Net has
created the fold's folder and split, and it can hit one fold of a small, imbalanced dataset whose other folds and
whose segmentation are still worth training). ``class_weighting: balanced`` weighs the classes by the cases that
enter the loss (:func:`balanced_class_weights`), not by all training cases.
"""

from __future__ import annotations

from typing import Collection, Mapping, Optional, Sequence

import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform

PHASE_SYNCHRONISED = (GaussianBlurTransform, MultiplicativeBrightnessTransform, ContrastTransform,
                      SimulateLowResolutionTransform, GammaTransform)


def cases_in_classification_loss(class_locations: Mapping[str, Mapping], lesion_label: int,
                                 fallback_label: Optional[int]) -> list[str]:
    """The cases (keys of ``class_locations``, nnU-Net's per-case ``class_locations`` from the preprocessed .pkl)
    that hold voxels of ``lesion_label`` or, lacking them, of ``fallback_label`` (when set): only their samples can
    enter the classification loss."""
    labels = [lesion_label] + ([fallback_label] if fallback_label is not None else [])
    return [case for case, locations in class_locations.items()
            if any(len(locations.get(label, ())) > 0 for label in labels)]


def balanced_class_weights(labels: Sequence[int], num_classes: int) -> np.ndarray:
    """Cross-entropy class weights ``w_k = n / (K' n_k)`` (K,) from the class indices of the cases that enter the
    loss: scikit-learn's ``compute_class_weight("balanced")`` over the K' classes present. A class without any such
    case gets 1 (it weighs no training sample)."""
    labels = np.asarray(labels, dtype=int)
    weights = np.ones(num_classes)
    present = np.unique(labels)
    if len(present):
        weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return weights


def classes_without_loss_cases(training_labels: Mapping[str, int], loss_cases: Collection[str],
                               class_names: Sequence[str], fallback_label: Optional[int]) -> list[str]:
    """One warning per class of ``class_names`` of which no training case enters the classification loss, naming
    the class and its number of training cases."""
    entering = set(loss_cases)
    warnings = []
    for k, name in enumerate(class_names):
        cases = [c for c, label in training_labels.items() if label == k]
        if not cases:
            warnings.append(f"class '{name}' has no training case in this fold: the head cannot learn it")
        elif not entering.intersection(cases):
            region = "lesion voxel" + ("" if fallback_label is None else f" nor voxel of fallback_roi_label "
                                                                         f"{fallback_label}")
            hint = ("set trainer_settings 'fallback_roi_label' (e.g. the organ) to localise lesion-free cases"
                    if fallback_label is None else "check the labels of these cases")
            warnings.append(f"class '{name}': none of its {len(cases)} training case(s) has a {region}, so no sample "
                            f"of this class enters the classification loss and the head cannot learn it; {hint}")
    return warnings


def phase_consistent(transforms: ComposeTransforms) -> ComposeTransforms:
    """nnU-Net's training transforms with the intensity transforms drawn once per sample for all channels."""
    for t in transforms.transforms:
        inner = t.transform if isinstance(t, RandomTransform) else t
        if isinstance(inner, PHASE_SYNCHRONISED):
            inner.synchronize_channels = True
            if isinstance(t, RandomTransform):
                t.apply_probability *= float(inner.p_per_channel)
            inner.p_per_channel = 1
    return transforms


class RoiCentredDataset:
    """An nnU-Net dataset whose foreground locations are those of the region-of-interest label of each case."""

    def __init__(self, dataset, lesion_label: int, fallback_label: Optional[int] = None):
        self.dataset = dataset
        self.lesion_label = lesion_label
        self.fallback_label = fallback_label

    def __getattr__(self, name):
        if name in ("dataset", "lesion_label", "fallback_label"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def load_case(self, identifier):
        data, seg, seg_prev, properties = self.dataset.load_case(identifier)
        locations = properties.get("class_locations") or {}
        for label in (self.lesion_label, self.fallback_label):
            if label is not None and len(locations.get(label, ())) > 0:
                properties = {**properties, "class_locations": {label: locations[label]}}
                break
        return data, seg, seg_prev, properties
