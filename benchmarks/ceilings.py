"""Ceilings for the classification benchmarks: what the images hold, and what nnU-Net's training loop loses.

Both rows use the same fold-0 training cases as the nnU-Net rows (``splits_final.json`` of the preprocessed dataset,
or nnU-Net's own seeded split when no training has written it yet) and are scored on the same held-out cases by the
same ``evaluate-cls`` (they write a ``classification.csv`` like ``predict-cls``). Images are nnU-Net's preprocessed
arrays (nnU-Net's ``DefaultPreprocessor.run_case`` on the raw files, the plans of the benchmark's dataset). The
region is the ground-truth lesion label of the case; on box data that is the box, not the true lesion; the label is
drawn on the first (reference) phase, so on misregistered data the other phases are read in the reference phase's
region, as the networks are trained.

- **Feature oracle** (:func:`oracle_features`): per phase, first-order statistics of the region and of a ring around
  it (the region dilated by ``RING_VOXELS`` voxels, minus the region): lesion mean and standard deviation, ring mean
  and standard deviation, their difference and the difference over the ring's standard deviation (a contrast-to-noise
  ratio; plain ratios of means are not used because nnU-Net's z-score normalisation puts means near 0); and the
  region's radial layout, which no first-order statistic of the whole region holds (a rim, a central scar, a capsule):
  the region split at the median of its distance to the region's border into a core and a border shell, with the
  core's and the shell's mean minus the ring's mean and the core's minus the shell's, and the region's 10th, 50th and
  90th intensity percentiles minus the ring's mean (12 features per phase). scikit-learn ``StandardScaler`` +
  ``LogisticRegression`` (L2, C = 1). What a linear model reads from hand-made features of the true region.
  Chosen on the lesion-types data of seed 1 only (the crop CNN's tuning seed; 76 fold-0 training cases, 200
  held-out), then frozen: held-out macro-F1 / kappa 0.677 / 0.642 with the first six features, 0.737 / 0.698 with the
  core and shell added, 0.760 / 0.733 with the percentiles too (kept), 0.742 / 0.709 with an outer ring's mean added
  (not kept); C = 0.1 was lower (0.601-0.705) and a cross-validated C (``LogisticRegressionCV``) not higher
  (0.652-0.748) for every feature set.
- **Crop network** (:func:`train_on_crops`): the fusion network of the benchmark's plan (``MultiPhaseFusionNet``,
  the trainer's default embedding and head, no decoder) trained outside nnU-Net's loop on patches of the plan's patch
  size centred on each training case's ground-truth lesion component (random flips along the three axes and a random
  shift of up to ``SHIFT`` voxels), AdamW, batch 4; held-out cases classified from one patch centred on their
  ground-truth lesion (as ``predict-cls --roi``). What the same network reaches without nnU-Net's sampling,
  augmentation, segmentation loss and schedule.
- **Crop CNN** (:class:`CropCNN`, :func:`train_crop_cnn`): the strong crop ceiling, a network of its own. Input: a
  ``CROP`` crop centred on the ground-truth region, every phase and the region mask as channels (early fusion); three
  stages of two 3x3x3 convolutions (instance norm, leaky ReLU; widths w, 2w, 4w, max-pooling between); at each stage the
  features are pooled over the region (the mask max-pooled to the stage's grid) and over the whole crop, and the
  masked mean and the masked-minus-global mean of the three stages feed a two-layer head. Trained with AdamW (cosine
  schedule) on class-balanced samples (a class drawn uniformly, then one of its cases: macro-F1 weighs every class
  alike), random flips along the three axes, a random shift of up to ``SHIFT`` voxels and a per-phase intensity jitter
  (scale ``exp(N(0, 0.1))``, shift ``N(0, 0.1)``); held-out cases are classified from their centred crop, softmax
  averaged over the eight flips. The number of samples seen is set to match the row it is compared to.
  Tuned on the lesion-types data of seed 1 only (96 training cases, fold 0, 200 held-out, 2,800 samples, width 16),
  then frozen: held-out macro-F1 / kappa 0.616 / 0.568 at learning rate 2e-3, 0.665 / 0.626 at 1e-3, 0.691 / 0.671 at
  5e-4, 0.666 / 0.618 at 2.5e-4 (one training each; steps of about 0.03 are within the run-to-run spread), so 5e-4.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

logger = logging.getLogger("ceilings")
RING_VOXELS = 3
#: bumped when a ceiling's definition changes; a benchmark's results.json keeps a ceiling only at the same version
VERSIONS = {"oracle": 2, "crops": 1, "crop_cnn": 1}
SHIFT = 2
CROP = (32, 32, 32)


def fold0_training_cases(preprocessed_folder: str, train_cases: Sequence[str]) -> list[str]:
    """The fold-0 training cases: ``splits_final.json`` if present, else nnU-Net's seeded 5-fold split."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    splits_file = os.path.join(preprocessed_folder, "splits_final.json")
    if os.path.isfile(splits_file):
        with open(splits_file) as f:
            return list(json.load(f)[0]["train"])
    return list(generate_crossval_split(sorted(train_cases), seed=12345, n_splits=5)[0]["train"])


def preprocessed_cases(raw_folder: str, preprocessed_folder: str, configuration: str, cases: Sequence[str],
                       split: str) -> dict:
    """``{case: (data (C, *S) float32, seg (*S) int16)}`` preprocessed by nnU-Net for ``configuration``."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    with open(os.path.join(preprocessed_folder, "dataset.json")) as f:
        dataset_json = json.load(f)
    plans = PlansManager(os.path.join(preprocessed_folder, "nnUNetPlans.json"))
    config = plans.get_configuration(configuration)
    ending = dataset_json["file_ending"]
    n_channels = len(dataset_json["channel_names"])
    preprocessor = DefaultPreprocessor(verbose=False)
    out = {}
    for case in cases:
        images = [os.path.join(raw_folder, f"images{split}", f"{case}_{c:04d}{ending}") for c in range(n_channels)]
        seg_file = os.path.join(raw_folder, f"labels{split}", f"{case}{ending}")
        data, seg, _ = preprocessor.run_case(images, seg_file, plans, config, dataset_json)
        out[case] = (data.astype(np.float32), seg[0].astype(np.int16))
    return out


def _stats(values: np.ndarray) -> tuple[float, float]:
    return (float(values.mean()), float(values.std())) if values.size else (0.0, 0.0)


def oracle_features(data: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(C, *S) and a boolean region (*S) -> 12 features per channel (see the module docstring)."""
    ring = ndimage.binary_dilation(region, iterations=RING_VOXELS) & ~region
    depth = ndimage.distance_transform_edt(region)
    core = depth > np.median(depth[region]) if region.any() else region
    shell = region & ~core
    features = []
    for channel in data:
        lesion_mean, lesion_sd = _stats(channel[region])
        ring_mean, ring_sd = _stats(channel[ring])
        core_mean, shell_mean = _stats(channel[core])[0], _stats(channel[shell])[0]
        percentiles = np.percentile(channel[region], (10, 50, 90)) if region.any() else np.zeros(3)
        features += [lesion_mean, lesion_sd, ring_mean, ring_sd, lesion_mean - ring_mean,
                     (lesion_mean - ring_mean) / max(ring_sd, 1e-3), core_mean - ring_mean, shell_mean - ring_mean,
                     core_mean - shell_mean, *(percentiles - ring_mean)]
    return np.array(features)


def oracle_probabilities(train: dict, test: dict, labels: dict, lesion_label: int, test_order: Sequence[str]
                         ) -> np.ndarray:
    """Logistic regression on :func:`oracle_features` of the training cases; probabilities (N, K) of the test cases."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def features(cases: dict, order):
        return np.stack([oracle_features(cases[c][0], cases[c][1] == lesion_label) for c in order])

    order = sorted(train)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    model.fit(features(train, order), [labels[c] for c in order])
    probabilities = np.zeros((len(test_order), max(labels.values()) + 1))
    probabilities[:, model.classes_] = model.predict_proba(features(test, test_order))
    return probabilities


def train_on_crops(network: torch.nn.Module, train: dict, labels: dict, lesion_label: int, patch_size, steps: int,
                   device: torch.device, seed: int = 0, lr: float = 1e-3) -> torch.nn.Module:
    """AdamW on lesion-centred patches of the training cases (see the module docstring)."""
    from nnunet_mvext.classification.case_prediction import crop_around, select_region

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    cases = sorted(c for c in train if (train[c][1] == lesion_label).any())
    regions = {c: select_region(train[c][1], lesion_label, train[c][1].shape) for c in cases}
    network.to(device).train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(steps):
        batch = rng.choice(len(cases), 4)
        xs, ms, ys = [], [], []
        for i in batch:
            c = cases[i]
            centre = [int(v + rng.integers(-SHIFT, SHIFT + 1)) for v in regions[c].centre]
            x = crop_around(torch.from_numpy(train[c][0]), centre, patch_size)
            m = crop_around(torch.from_numpy(regions[c].mask[None].astype(np.float32)), centre, patch_size)
            flips = [a + 1 for a in range(3) if rng.random() < 0.5]
            if flips:
                x, m = torch.flip(x, flips), torch.flip(m, flips)
            xs.append(x)
            ms.append(m)
            ys.append(labels[c])
        _, out = network.forward_with_classification(torch.stack(xs).to(device), torch.stack(ms).to(device))
        loss = network.head.loss(out, torch.tensor(ys, device=device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return network.eval()


def crop_probabilities(network: torch.nn.Module, test: dict, lesion_label: int, patch_size, test_order,
                       device: torch.device) -> np.ndarray:
    """Each held-out case classified from one patch centred on its ground-truth lesion component."""
    from nnunet_mvext.classification.case_prediction import classify_case, select_region

    out = []
    for c in test_order:
        data, seg = test[c]
        region = select_region(seg, lesion_label, seg.shape)
        out.append(classify_case(network, torch.from_numpy(data), region, patch_size, None, device)["probabilities"])
    return np.stack(out)


def write_predictions(folder: str, cases: Sequence[str], probabilities: np.ndarray, class_names: Sequence[str],
                      dataset_json_file: str) -> None:
    """``classification.csv`` (and the dataset.json predict-cls writes beside it) for ``evaluate-cls``."""
    import shutil

    from nnunet_mvext.classification.prediction_table import write_case_predictions

    os.makedirs(folder, exist_ok=True)
    write_case_predictions(os.path.join(folder, "classification.csv"), list(cases), probabilities, list(class_names),
                           ["lesion"] * len(cases), [], None, None)
    shutil.copy(dataset_json_file, os.path.join(folder, "dataset.json"))


class CropCNN(torch.nn.Module):
    """``(B, P, *CROP)`` phases and ``(B, 1, *CROP)`` region mask -> ``(B, K)`` logits (module docstring)."""

    def __init__(self, num_phases: int, num_classes: int, width: int = 16, dropout: float = 0.2):
        super().__init__()
        nn = torch.nn
        widths = (width, 2 * width, 4 * width)

        def stage(c_in: int, c_out: int) -> torch.nn.Sequential:
            return nn.Sequential(nn.Conv3d(c_in, c_out, 3, padding=1), nn.InstanceNorm3d(c_out, affine=True),
                                 nn.LeakyReLU(0.01, inplace=True), nn.Conv3d(c_out, c_out, 3, padding=1),
                                 nn.InstanceNorm3d(c_out, affine=True), nn.LeakyReLU(0.01, inplace=True))

        self.stages = nn.ModuleList([stage(c_in, c_out) for c_in, c_out in zip((num_phases + 1, *widths[:-1]),
                                                                                 widths)])
        self.head = nn.Sequential(nn.Linear(2 * sum(widths), 4 * width), nn.LeakyReLU(0.01, inplace=True),
                                  nn.Dropout(dropout), nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = []
        h = torch.cat([x, mask], 1)
        for i, stage in enumerate(self.stages):
            if i:
                h = torch.nn.functional.max_pool3d(h, 2)
                mask = torch.nn.functional.max_pool3d(mask, 2)
            h = stage(h)
            weight = mask / mask.sum(dim=(2, 3, 4), keepdim=True).clamp_min(1.0)
            masked = (h * weight).sum(dim=(2, 3, 4))
            pooled += [masked, masked - h.mean(dim=(2, 3, 4))]
        return self.head(torch.cat(pooled, 1))


def _crop_pair(data: np.ndarray, mask: np.ndarray, centre, crop) -> tuple[torch.Tensor, torch.Tensor]:
    from nnunet_mvext.classification.case_prediction import crop_around

    return (crop_around(torch.from_numpy(data), centre, crop),
            crop_around(torch.from_numpy(mask[None].astype(np.float32)), centre, crop))


def train_crop_cnn(train: dict, labels: dict, lesion_label: int, num_classes: int, samples: int, device: torch.device,
                   seed: int = 0, batch: int = 4, lr: float = 5e-4, width: int = 16, crop=CROP) -> CropCNN:
    """:class:`CropCNN` trained on ``samples`` crops (``ceil(samples / batch)`` steps; module docstring)."""
    from nnunet_mvext.classification.case_prediction import select_region

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    cases = sorted(c for c in train if (train[c][1] == lesion_label).any())
    regions = {c: select_region(train[c][1], lesion_label, train[c][1].shape) for c in cases}
    by_class = {k: [c for c in cases if labels[c] == k] for k in range(num_classes)}
    present = [k for k, cs in by_class.items() if cs]
    network = CropCNN(train[cases[0]][0].shape[0], num_classes, width).to(device).train()
    steps = max(1, -(-samples // batch))
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        xs, ms, ys = [], [], []
        for _ in range(batch):
            k = present[int(rng.integers(len(present)))]
            c = by_class[k][int(rng.integers(len(by_class[k])))]
            centre = [int(v + rng.integers(-SHIFT, SHIFT + 1)) for v in regions[c].centre]
            x, m = _crop_pair(train[c][0], regions[c].mask, centre, crop)
            x = x * torch.from_numpy(np.exp(rng.normal(0, 0.1, (x.shape[0], 1, 1, 1))).astype(np.float32)) \
                + torch.from_numpy(rng.normal(0, 0.1, (x.shape[0], 1, 1, 1)).astype(np.float32))
            flips = [a + 1 for a in range(3) if rng.random() < 0.5]
            if flips:
                x, m = torch.flip(x, flips), torch.flip(m, flips)
            xs.append(x)
            ms.append(m)
            ys.append(k)
        logits = network(torch.stack(xs).to(device), torch.stack(ms).to(device))
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(ys, device=device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return network.eval()


@torch.no_grad()
def crop_cnn_probabilities(network: CropCNN, test: dict, lesion_label: int, test_order, device: torch.device,
                           crop=CROP) -> np.ndarray:
    """``(N, K)``: softmax over the eight flips of each held-out case's crop centred on its ground-truth region."""
    import itertools

    from nnunet_mvext.classification.case_prediction import select_region

    flips = [f for r in range(4) for f in itertools.combinations((2, 3, 4), r)]
    out = []
    for c in test_order:
        data, seg = test[c]
        region = select_region(seg, lesion_label, seg.shape)
        mask = region.mask if region.mask is not None else np.zeros(seg.shape, dtype=bool)
        x, m = (t[None].to(device) for t in _crop_pair(data, mask, region.centre, crop))
        probabilities = [torch.softmax(network(torch.flip(x, f), torch.flip(m, f)), 1) for f in flips]
        out.append(torch.stack(probabilities).mean(0)[0].cpu().numpy())
    return np.stack(out)
