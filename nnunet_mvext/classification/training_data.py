"""What the fusion trainers change in nnU-Net's data pipeline, and nothing else.

**Phase-consistent intensity augmentation.** nnU-Net draws the parameters of Gaussian blur, brightness, contrast,
low resolution and gamma independently per channel, i.e. per phase. The case class of multi-phase data is an
inter-phase enhancement pattern, so a +-25 % contrast change of one phase alone is label noise.
:func:`phase_consistent` takes nnU-Net's own training transforms and sets ``synchronize_channels`` on those five, so
one set of parameters per sample is applied to every phase. Where nnU-Net applies a transform to each channel with
probability ``p_per_channel`` (blur, low resolution: 0.5), the sample-level probability is multiplied by it instead,
so each phase is still transformed as often as before, only now together. Gaussian noise stays independent per
phase (it is not a contrast change). Spatial transforms and mirroring were already drawn once per sample.

**Case sampling.** :class:`CaseSamplingDataset` wraps the training dataset so that nnU-Net's loader, which draws
``np.random.choice(dataset.identifiers)``, draws each case with a probability set by its class (``case_sampling``):
each identifier is listed ``m_i`` times, ``m_i`` proportional to ``n_{k(i)}^{-a}`` (``a`` = 1: every class equally
often; 0.5: class frequency proportional to ``sqrt(n_k)``), rounded with the smallest class's cases listed
``RESOLUTION`` times, so the drawn frequencies are within ``1 / (2 RESOLUTION)`` of the intended ones. nnU-Net's
loader and its workers are used unchanged.

**Phase misalignment.** :func:`with_phase_misalignment` appends to nnU-Net's training transforms one
batchgeneratorsv2 ``ChannelMisalignmentTransform`` per phase but the fixed one: a random integer shift in
``[-n, n]`` voxels per axis with probability 0.5, drawn per phase and sample. The phase that stays fixed is the one
the label is drawn on, with which the region of interest is aligned at inference too (:func:`misalignment_reference`):
the import's reference phase where the dataset records one (``import-lld``'s ``--reference-phase``, default C+A), else
the first phase. (The release before kept the first phase fixed in every dataset, which in an LLD-MMRI import is T2WI,
so C+A, the phase of the label, was shifted away from its label.)

**Region-centred sampling.** :class:`RoiCentredDataset` wraps an nnU-Net dataset so that nnU-Net's foreground
sampling picks only the region-of-interest label's locations: the lesion, or for cases without lesion voxels the
fallback label when one is set. The fusion trainers use it for the lesion-centred validation patches of the
per-epoch classification metric, and for training when ``segmentation`` is false (no segmentation loss to keep
nnU-Net's sampling for).

**One region per patch.** A patch can hold several lesions (or parts of them); inference classifies from one
component (:func:`~nnunet_mvext.classification.case_prediction.most_probable_component`).
:func:`central_component` picks the one a training patch is about: the component at the patch centre, where nnU-Net's
foreground sampling puts the sampled lesion voxel, else the largest. The multi-view trainers train on it.

**Cases that enter the classification loss, and the class weights.** A sample enters the classification loss only
when its patch holds the region of interest, so a training case without lesion voxels (and without voxels of the
``fallback_roi_label``, if one is set) never does (:func:`cases_in_classification_loss`). A class all of whose
training cases are such cases drops out of the loss: the head cannot learn it. :func:`classes_without_loss_cases`
names each such class for a warning in the training log (a warning, not a refusal: it is known only once nnU-Net has
created the fold's folder and split, and it can hit one fold of a small, imbalanced dataset whose other folds and
whose segmentation are still worth training). ``class_weighting: balanced`` weighs the classes by the cases that
enter the loss (:func:`balanced_class_weights`), not by all training cases, each counted as often as it is drawn
(:func:`balanced_weights_as_drawn`): ``case_sampling`` lists every training case, lesion-free ones included, so its
multiplicities are those of the class counts of all training cases.
"""

from __future__ import annotations

from typing import Collection, Mapping, Optional, Sequence

import numpy as np
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.channel_misalignment import ChannelMisalignmentTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from scipy import ndimage
from sklearn.utils.class_weight import compute_class_weight

#: ``case_sampling`` -> the exponent ``a`` of the class count
SAMPLING_EXPONENTS = {"uniform": 0.0, "sqrt_balanced": 0.5, "balanced": 1.0}
RESOLUTION = 8
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


def balanced_weights_as_drawn(training_labels: Mapping[str, int], loss_cases: Collection[str], exponent: float,
                               num_classes: int) -> np.ndarray:
    """:func:`balanced_class_weights` (K,) of the cases in ``loss_cases``, each counted as often as
    :class:`CaseSamplingDataset` lists it among all ``training_labels`` (``exponent``: the ``case_sampling``'s
    :data:`SAMPLING_EXPONENTS`): the loader draws from every training case, so the multiplicities follow the class
    counts of all of them, lesion-free cases included."""
    drawn = case_multiplicities(training_labels, exponent)
    return balanced_class_weights([training_labels[k] for k in loss_cases for _ in range(drawn[k])], num_classes)


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


def central_component(mask: np.ndarray) -> np.ndarray:
    """The connected component of the patch mask ``mask`` (*S) at the patch centre, else the largest (bool, (*S)).

    The patch centre is the point ``(S - 1) / 2``; a component is at the centre when it holds one of the voxels nearest
    to it (indices ``floor`` and ``ceil`` of ``(S - 1) / 2`` per axis: one voxel for odd sizes, up to ``2^d`` for even
    ones); of several such, the largest. Components as :func:`scipy.ndimage.label` (face connectivity), as at
    inference, labelled within the mask's bounding box (a tenth of the time of the whole 128^3 patch). An empty mask
    gives an empty mask.
    """
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=bool)
    if not mask.any():
        return out
    box = []
    for a in range(mask.ndim):
        occupied = np.flatnonzero(mask.any(axis=tuple(d for d in range(mask.ndim) if d != a)))
        box.append(slice(int(occupied[0]), int(occupied[-1]) + 1))
    components, n = ndimage.label(mask[tuple(box)])
    sizes = np.bincount(components.ravel(), minlength=n + 1)
    centre = tuple(slice(max((s - 1) // 2 - b.start, 0), max(s // 2 + 1 - b.start, 0)) for s, b in zip(mask.shape, box))
    at_centre = np.unique(components[centre])
    at_centre = at_centre[at_centre > 0]
    candidates = at_centre if len(at_centre) else np.arange(1, n + 1)
    out[tuple(box)] = components == candidates[np.argmax(sizes[candidates])]
    return out


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


def case_multiplicities(case_classes: Mapping[str, int], exponent: float) -> dict[str, int]:
    """How often each case is listed so that class k is drawn with frequency proportional to ``n_k^(1 - a)``."""
    counts: dict[int, int] = {}
    for k in case_classes.values():
        counts[k] = counts.get(k, 0) + 1
    weight = {k: n ** -exponent for k, n in counts.items()}
    smallest = min(weight.values())
    return {case: max(1, int(round(RESOLUTION * weight[k] / smallest))) for case, k in case_classes.items()}


class CaseSamplingDataset:
    """An nnU-Net dataset whose ``identifiers`` list each case :func:`case_multiplicities` times."""

    def __init__(self, dataset, case_classes: Mapping[str, int], exponent: float):
        self.dataset = dataset
        multiplicity = case_multiplicities({k: case_classes[k] for k in dataset.identifiers}, exponent)
        self.identifiers = [k for k in dataset.identifiers for _ in range(multiplicity[k])]

    def __getattr__(self, name):
        if name in ("dataset", "identifiers"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def misalignment_reference(phase_channels: Sequence[Sequence[int]], channel_names: Mapping[str, str],
                           reference_phase: Optional[str]) -> int:
    """The phase group (index into ``phase_channels``) that the misalignment augmentation keeps fixed: the one
    holding the channel named ``reference_phase`` (``dataset.json`` ``channel_names``, index -> name), else 0."""
    if reference_phase is not None:
        for index, name in channel_names.items():
            if name == reference_phase:
                for g, group in enumerate(phase_channels):
                    if int(index) in group:
                        return g
    return 0


def with_phase_misalignment(transforms: ComposeTransforms, phase_channels: Sequence[Sequence[int]],
                            max_shift: int, probability: float = 0.5, fixed_phase: int = 0) -> ComposeTransforms:
    """nnU-Net's training transforms followed by a random shift of every phase but ``fixed_phase`` (an index into
    ``phase_channels``; see the module docstring); nothing is added for ``max_shift`` 0 or a single phase."""
    if max_shift <= 0:
        return transforms
    for group in [g for i, g in enumerate(phase_channels) if i != fixed_phase]:
        transforms.transforms.append(ChannelMisalignmentTransform(
            im_channels_2_misalign=list(group), rad_or_deg="rad", rotation_ax_cor_sag=(0.0, 0.0, 0.0),
            shift_zyx=(max_shift,) * 3, p_shift=probability))
    return transforms
