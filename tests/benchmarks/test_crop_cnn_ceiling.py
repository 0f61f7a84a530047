"""The crop CNN ceiling (benchmarks/ceilings.py) and its wiring in fusion_classification_results: it pools over the
given region, learns a class that only the region shows, sees as many samples as an nnU-Net row by default, and the
table states each row's gap to the better ceiling."""

import argparse
import os
import sys

import numpy as np
import pytest
import torch

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")


@pytest.fixture
def modules(monkeypatch):
    monkeypatch.syspath_prepend(BENCHMARKS)
    import ceilings
    import fusion_classification_results

    return ceilings, fusion_classification_results


def test_the_region_decides_the_pooled_features(modules):
    ceilings, _ = modules
    torch.manual_seed(0)
    network = ceilings.CropCNN(num_phases=2, num_classes=3).eval()
    x = torch.randn(1, 2, *ceilings.CROP)
    left, right = torch.zeros(1, 1, *ceilings.CROP), torch.zeros(1, 1, *ceilings.CROP)
    left[..., 4:10, 4:10, 4:10] = 1
    right[..., 20:26, 20:26, 20:26] = 1
    with torch.no_grad():
        out_left, out_right = network(x, left), network(x, right)
    assert out_left.shape == (1, 3) and not torch.allclose(out_left, out_right)


def _toy_cases(n: int, rng: np.random.Generator) -> tuple[dict, dict]:
    """Class 1: the region is bright in phase 1 only; class 0: dark. A distractor elsewhere has either contrast."""
    cases, labels = {}, {}
    for i in range(n):
        label = i % 2
        data = rng.normal(0, 0.3, (2, 24, 24, 24)).astype(np.float32)
        seg = np.zeros((24, 24, 24), dtype=np.int16)
        lo = rng.integers(8, 13, 3)
        region = tuple(slice(int(a), int(a) + 4) for a in lo)
        seg[region] = 2
        data[(1, *region)] += 2.0 if label else -2.0
        data[1, 2:6, 2:6, 2:6] += 2.0 if rng.random() < 0.5 else -2.0
        cases[f"c{i:02d}"], labels[f"c{i:02d}"] = (data, seg), label
    return cases, labels


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine several threads per process oversubscribe the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_crop_cnn_learns_what_only_the_region_shows(modules, one_thread):
    ceilings, _ = modules
    rng = np.random.default_rng(0)
    train, labels = _toy_cases(16, rng)
    test, test_labels = _toy_cases(12, rng)
    cpu, crop = torch.device("cpu"), (16, 16, 16)
    network = ceilings.train_crop_cnn(train, labels, 2, 2, samples=64, device=cpu, seed=0, width=4, crop=crop)
    order = sorted(test)
    probabilities = ceilings.crop_cnn_probabilities(network, test, 2, order, cpu, crop=crop)
    assert probabilities.shape == (12, 2) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    accuracy = np.mean(probabilities.argmax(1) == np.array([test_labels[c] for c in order]))
    assert accuracy >= 0.9


def test_crop_cnn_sees_an_nnunet_rows_samples_by_default(modules):
    _, fcr = modules
    args = argparse.Namespace(epochs=35, iterations=40, crop_samples=None)
    assert fcr.crop_cnn_samples(args) == 35 * 40 * 2
    args.crop_samples = 1000
    assert fcr.crop_cnn_samples(args) == 1000
    assert "crop_cnn" in fcr.rows_for(8) and "lesion-types" in fcr.DATA


def _metrics(f1: float, **extra) -> dict:
    return {"macro_f1": f1, "auc": 0.9, "balanced_accuracy": 0.5, "cohen_kappa": 0.5, "mean_beta": {},
            "predicted_class_counts": {"a": 1, "b": 1}, "train_seconds": 1.0, **extra}


def test_table_states_the_gap_to_the_better_ceiling(modules, monkeypatch):
    _, fcr = modules
    monkeypatch.setattr(sys, "argv", ["fusion_classification_results.py"])
    args = argparse.Namespace(device="cpu", data="lesion-types", seed=0, class_priors=None, misregistration=2,
                              epochs=1, iterations=1, rows=None)
    dataset = argparse.Namespace(train_cases=(), test_cases=())
    results = {"oracle": _metrics(0.70), "crop_cnn": _metrics(0.80, samples=2800), "abaf": _metrics(0.55)}
    lines = fcr.table(args, fcr.DATA["lesion-types"], dataset, results, fcr.rows_for(8))
    text = "\n".join(lines)
    assert "synthetic.lesion_types" in text
    row = next(line for line in lines if line.startswith(f"| {fcr.HEADS['abaf']} |"))
    assert "| -0.250 (crop_cnn) |" in row
    assert any("2800 samples" in line and "| +0.000 (crop_cnn) |" in line for line in lines)


def _layout_cases(n: int, rng: np.random.Generator) -> tuple[dict, dict]:
    """Class 1: a bright rim around a dark core; class 0: the same voxel values shuffled inside the region. Every
    first-order statistic of the region (mean, SD, percentiles) is the same for both; only the layout differs."""
    cases, labels = {}, {}
    zz, yy, xx = np.mgrid[:20, :20, :20]
    region = (zz - 10) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2 <= 36
    depth = np.sqrt((zz - 10) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2)
    for i in range(n):
        label = i % 2
        data = rng.normal(0, 0.2, (1, 20, 20, 20)).astype(np.float32)
        values = np.where(depth[region] > 4, 2.0, -1.0).astype(np.float32)
        data[0][region] += values if label else rng.permutation(values)
        seg = np.where(region, 2, 0).astype(np.int16)
        cases[f"c{i:02d}"], labels[f"c{i:02d}"] = (data, seg), label
    return cases, labels


def test_oracle_reads_the_regions_radial_layout(modules):
    """A rim (hemangioma's or an abscess's) against the same values scattered: the core and shell features tell them
    apart, where the first-order statistics alone are at chance."""
    ceilings, _ = modules
    rng = np.random.default_rng(0)
    train, labels = _layout_cases(20, rng)
    test, test_labels = _layout_cases(20, rng)
    order = sorted(test)
    probabilities = ceilings.oracle_probabilities(train, test, labels, 2, order)
    accuracy = np.mean(probabilities.argmax(1) == np.array([test_labels[c] for c in order]))
    assert accuracy >= 0.9


def test_a_ceiling_measured_by_an_earlier_definition_is_measured_again(modules):
    """results.json keeps rows across --resume; a ceiling whose definition changed since must not be kept."""
    ceilings, fcr = modules
    assert fcr.outdated_ceiling("oracle", {"macro_f1": 0.7})  # before versions were recorded: version 1
    assert not fcr.outdated_ceiling("oracle", {"ceiling_version": ceilings.VERSIONS["oracle"]})
    assert not fcr.outdated_ceiling("abaf", {"macro_f1": 0.7})  # trained rows: refuse_stale_model checks them
