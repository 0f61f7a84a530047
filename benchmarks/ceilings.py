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
  ratio; plain ratios of means are not used because nnU-Net's z-score normalisation puts means near 0). scikit-learn
  ``StandardScaler`` + ``LogisticRegression`` (L2, C = 1). What a linear model reads from hand-made features of the
  true region: the information the images hold about the class, to first order.
- **Crop network** (:func:`train_on_crops`): the fusion network of the benchmark's plan (``MultiPhaseFusionNet``,
  the trainer's default embedding and head, no decoder) trained outside nnU-Net's loop on patches of the plan's patch
  size centred on each training case's ground-truth lesion component (random flips along the three axes and a random
  shift of up to ``SHIFT`` voxels), AdamW, batch 4; held-out cases classified from one patch centred on their
  ground-truth lesion (as ``predict-cls --roi``). What the same network reaches without nnU-Net's sampling,
  augmentation, segmentation loss and schedule.
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
SHIFT = 2


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
    """(C, *S) and a boolean region (*S) -> 6 features per channel (see the module docstring)."""
    ring = ndimage.binary_dilation(region, iterations=RING_VOXELS) & ~region
    features = []
    for channel in data:
        lesion_mean, lesion_sd = _stats(channel[region])
        ring_mean, ring_sd = _stats(channel[ring])
        features += [lesion_mean, lesion_sd, ring_mean, ring_sd, lesion_mean - ring_mean,
                     (lesion_mean - ring_mean) / max(ring_sd, 1e-3)]
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
