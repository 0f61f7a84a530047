import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.synthetic.multiphase import generate_multiphase_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_multiphase_dataset(str(tmp_path_factory.mktemp("raw")), dataset_id=42, num_train=24, num_test=2,
                                       shape=(24, 24, 24))


def test_layout_follows_nnunet_raw_format(dataset):
    folder = dataset.folder
    meta = json.loads(Path(os.path.join(folder, "dataset.json")).read_text())
    assert meta["channel_names"] == {"0": "arterial", "1": "portal_venous", "2": "delayed"}
    assert meta["labels"] == {"background": 0, "organ": 1, "lesion": 2} and meta["numTraining"] == 24
    assert set(meta["classification"]["labels"].values()) == {0, 1}
    assert len(os.listdir(os.path.join(folder, "imagesTr"))) == 3 * 24
    seg = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, "labelsTr", "case_000.nii.gz")))
    assert set(np.unique(seg)) == {0, 1, 2}
    img = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, "imagesTr", "case_000_0000.nii.gz")))
    assert img.shape == (24, 24, 24)


def test_class_needs_more_than_one_phase(dataset):
    """Each single phase's lesion contrast overlaps between classes; the delayed-minus-arterial change does not."""
    cases = dataset.train_cases
    labels = np.array([c.label for c in cases])
    for phase in ("arterial", "portal_venous", "delayed"):
        values = np.array([getattr(c, phase) for c in cases])
        assert values[labels == 0].min() < values[labels == 1].max(), phase
    change = np.array([c.delayed - c.arterial for c in cases])
    assert change[labels == 1].max() < change[labels == 0].min()


def test_existing_dataset_is_not_overwritten(dataset):
    with pytest.raises(MVExtError, match="already exists"):
        generate_multiphase_dataset(os.path.dirname(dataset.folder), dataset_id=42)


# The binary default must stay what the demo, the e2e tests and earlier benchmark numbers were made with: these
# values were written by the generator before the multi-class mode existed (same arguments, same seed).
LEGACY_TRUTH = {"Tr": ("case_001", 1, 1.3565123909464427, 1.0829032679096204, 0.7565123909464427),
                "Ts": ("case_006", 1, 1.3630339414474077, 0.9700814859543725, 0.7630339414474078)}
LEGACY_IMAGES = {"imagesTr/case_001_0000": (0.157465, 0.35568, 2.039098),
                 "imagesTr/case_001_0002": (0.154699, 0.344883, 1.016554),
                 "imagesTs/case_006_0001": (0.202744, 0.426701, 1.689095),
                 "labelsTr/case_001": (0.155134, 0.37416, 2.0)}


def _array(folder, name):
    return sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, name + ".nii.gz")))


def test_binary_default_output_is_unchanged(tmp_path):
    ds = generate_multiphase_dataset(str(tmp_path), dataset_id=7, num_train=5, num_test=2, shape=(12, 14, 16),
                                     seed=11, misregistration_voxels=1)
    cases = json.loads(Path(os.path.join(ds.folder, "cases.json")).read_text())
    for split, (case_id, label, *contrasts) in LEGACY_TRUTH.items():
        c = cases[split][1]
        assert (c["case_id"], c["label"]) == (case_id, label)
        assert [c["arterial"], c["portal_venous"], c["delayed"]] == pytest.approx(contrasts, abs=1e-12)
    assert [c["label"] for c in cases["Tr"]] == [0, 1, 0, 1, 0]
    for name, (mean, std, voxel) in LEGACY_IMAGES.items():
        a = _array(ds.folder, name).astype(float)
        assert (a.mean(), a.std(), a[6, 7, 8]) == pytest.approx((mean, std, voxel), abs=2e-5), name


PRIORS = (4, 2, 2, 1, 1, 1, 1)


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory):
    """7 classes over 4 phases, imbalanced priors; many tiny cases (the ground truth is what is tested). The 7
    held-out cases need the one-per-class rule: the priors alone would give the rarest classes none."""
    return generate_multiphase_dataset(str(tmp_path_factory.mktemp("raw")), dataset_id=43, num_train=144,
                                       num_test=7, shape=(8, 8, 8), seed=4, num_phases=4, num_classes=7,
                                       class_priors=PRIORS)


def _features(cases, shell=True):
    """Per-phase lesion/organ intensity ratios of core and shell: (N, P, 2)."""
    organ = np.array([c.organ_level for c in cases])
    core = (organ + np.array([c.core_contrast for c in cases])) / organ
    out = [core, (organ + np.array([c.shell_contrast for c in cases])) / organ] if shell else [core]
    return np.stack(out, axis=-1)


def test_multiclass_layout_and_class_names(multiclass):
    meta = json.loads(Path(os.path.join(multiclass.folder, "dataset.json")).read_text())
    assert meta["channel_names"] == {str(p): f"phase_{p}" for p in range(4)}
    assert meta["classification"]["class_names"] == {
        "0": "persistent", "1": "washout", "2": "fill_in", "3": "rim", "4": "early_peak", "5": "plateau",
        "6": "late_peak"}
    assert len(os.listdir(os.path.join(multiclass.folder, "imagesTs"))) == 4 * 7
    rows = Path(os.path.join(multiclass.labels_ts, "classification.csv")).read_text().split()
    assert rows[0] == "case_id,class" and len(rows) == 8
    cases = json.loads(Path(os.path.join(multiclass.folder, "cases.json")).read_text())
    assert cases["Tr"][0]["class_name"] == multiclass.class_names[cases["Tr"][0]["label"]]
    assert len(cases["Ts"][0]["core_contrast"]) == 4


def test_every_class_in_both_splits_and_priors_respected(multiclass):
    priors = np.array(PRIORS) / sum(PRIORS)
    for cases in (multiclass.train_cases, multiclass.test_cases):
        assert np.all(np.bincount([c.label for c in cases], minlength=7) >= 1)
    counts = np.bincount([c.label for c in multiclass.train_cases], minlength=7)
    assert np.all(np.abs(counts - 144 * priors) <= 1), (counts, 144 * priors)


def test_class_needs_all_phases_not_one(multiclass):
    """A logistic regression on one phase's lesion/organ ratios (core and shell) stays far below the same model on
    all phases; and in every phase the classes' core contrasts overlap."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    cases = multiclass.train_cases + multiclass.test_cases
    x, y = _features(cases), np.array([c.label for c in cases])
    model = LogisticRegression(max_iter=5000)
    all_phases = cross_val_score(model, x.reshape(len(x), -1), y, cv=4).mean()
    assert all_phases >= 0.85
    for p in range(x.shape[1]):
        one = cross_val_score(model, x[:, p], y, cv=4).mean()
        assert one <= all_phases - 0.3, (p, one, all_phases)
        core = x[:, p, 0]
        ranges = [(core[y == k].min(), core[y == k].max()) for k in range(7)]
        assert max(lo for lo, _ in ranges) < min(hi for _, hi in ranges), (p, ranges)


def test_rim_is_a_shell_that_changes_over_the_phases(multiclass):
    cases = multiclass.train_cases + multiclass.test_cases
    change = {c.label: [] for c in cases}
    for c in cases:
        rim_minus_core = np.array(c.shell_contrast) - np.array(c.core_contrast)
        change[c.label].append(np.ptp(rim_minus_core))
    assert min(change[3]) > 0.5 and max(max(v) for k, v in change.items() if k != 3) < 1e-9


@pytest.fixture(scope="module")
def box_pair(tmp_path_factory):
    """The same multi-class data (3 phases, 5 classes, misregistered) with masks and with box labels."""
    raw = str(tmp_path_factory.mktemp("raw"))
    kwargs = dict(num_train=6, num_test=5, shape=(24, 24, 24), seed=9, num_phases=3, num_classes=5,
                  misregistration_voxels=1)
    return (generate_multiphase_dataset(raw, dataset_id=44, **kwargs),
            generate_multiphase_dataset(raw, dataset_id=45, box_labels=True, **kwargs))


def test_box_labels_are_filled_boxes_around_the_lesion_and_images_unchanged(box_pair):
    masks, boxes = box_pair
    meta = json.loads(Path(os.path.join(boxes.folder, "dataset.json")).read_text())
    assert boxes.box_labels and "bounding box" in meta["description"]
    for split, cases in (("Tr", masks.train_cases), ("Ts", masks.test_cases)):
        for c in cases:
            for p in range(3):
                name = f"images{split}/{c.case_id}_{p:04d}"
                assert np.array_equal(_array(masks.folder, name), _array(boxes.folder, name))
            seg, box = _array(masks.folder, f"labels{split}/{c.case_id}"), _array(boxes.folder,
                                                                                 f"labels{split}/{c.case_id}")
            lesion = np.argwhere(seg == 2)
            lo, hi = lesion.min(0), lesion.max(0)
            region = tuple(slice(a, b + 1) for a, b in zip(lo, hi))
            assert np.all(box[region] == 2) and (box == 2).sum() == np.prod(hi - lo + 1)
            assert (box == 2).sum() > (seg == 2).sum() and np.all(box[seg == 2] == 2)
            outside = np.ones(seg.shape, bool)
            outside[region] = False
            assert np.array_equal(box[outside], seg[outside])


def test_images_carry_the_ground_truth(box_pair):
    """Measured lesion-minus-organ intensity of the first (unshifted) phase follows cases.json."""
    masks, _ = box_pair
    measured, truth = [], []
    for c in masks.train_cases:
        seg = _array(masks.folder, f"labelsTr/{c.case_id}")
        img = _array(masks.folder, f"imagesTr/{c.case_id}_0000").astype(float)
        measured.append(img[seg == 2].mean() - img[seg == 1].mean())
        truth.append(0.5 * (c.core_contrast[0] + c.shell_contrast[0]))
    assert np.corrcoef(measured, truth)[0, 1] > 0.9


def test_channel_names_and_limits(tmp_path):
    ds = generate_multiphase_dataset(str(tmp_path), dataset_id=46, num_train=5, num_test=4, shape=(10, 10, 10),
                                     num_phases=2, num_classes=4)
    assert ds.channel_names == ("arterial", "delayed")
    assert {c.label for c in ds.test_cases} == {0, 1, 2, 3}
    with pytest.raises(MVExtError, match="at most 6 enhancement patterns"):
        generate_multiphase_dataset(str(tmp_path), dataset_id=47, num_phases=3, num_classes=7)
    with pytest.raises(MVExtError, match="class_priors has 2 values; num_classes is 3"):
        generate_multiphase_dataset(str(tmp_path), dataset_id=47, num_phases=4, num_classes=3, class_priors=(1, 2))
    with pytest.raises(MVExtError, match="positive"):
        generate_multiphase_dataset(str(tmp_path), dataset_id=47, num_classes=2, class_priors=(1, 0))
    with pytest.raises(MVExtError, match="every class needs a training case"):
        generate_multiphase_dataset(str(tmp_path), dataset_id=47, num_train=5, num_phases=4, num_classes=6)
    assert not os.path.exists(os.path.join(str(tmp_path), "Dataset047_MVExtSynthetic"))


def test_binary_mode_with_priors_keeps_binary_patterns(tmp_path):
    ds = generate_multiphase_dataset(str(tmp_path), dataset_id=48, num_train=10, num_test=4, shape=(10, 10, 10),
                                     class_priors=(4, 1))
    assert [c.label for c in ds.train_cases].count(0) == 8 and {c.label for c in ds.test_cases} == {0, 1}
    assert all(abs((c.delayed - c.arterial) + 0.6 * c.label) < 1e-9 for c in ds.train_cases)


def test_make_dataset_cli_options(tmp_path):
    from nnunet_mvext.cli import main

    assert main(["make-dataset", "--raw", str(tmp_path), "--dataset-id", "49", "--num-train", "6", "--num-test", "3",
                 "--shape", "12", "12", "12", "--num-phases", "5", "--num-classes", "3", "--class-priors", "3,2,1",
                 "--box-labels", "--misregistration", "1"]) == 0
    meta = json.loads(Path(os.path.join(str(tmp_path), "Dataset049_MVExtSynthetic", "dataset.json")).read_text())
    assert len(meta["channel_names"]) == 5 and len(meta["classification"]["class_names"]) == 3
    assert "bounding box" in meta["description"]
    assert main(["make-dataset", "--raw", str(tmp_path), "--dataset-id", "50", "--class-priors", "a,b"]) == 2


def test_images_show_the_shell_contrast():
    """The lesion's outer voxels minus its inner voxels, measured in the images, follow shell - core."""
    from scipy.ndimage import binary_erosion

    from nnunet_mvext.synthetic.multiphase import make_multiclass_case

    rng = np.random.default_rng(0)
    measured, truth = [], []
    for i in range(12):
        images, seg, gt = make_multiclass_case((32, 32, 32), 3 if i % 2 else 0, 4, 7, rng)
        lesion = seg == 2
        edge, inner = lesion & ~binary_erosion(lesion), binary_erosion(lesion, iterations=2)
        for p in range(4):
            measured.append(images[p][edge].mean() - images[p][inner].mean())
            truth.append(gt["shell_contrast"][p] - gt["core_contrast"][p])
    assert np.corrcoef(measured, truth)[0, 1] > 0.6
