"""The second synthetic generator (LLD-MMRI lesion types): layout, class priors, every type's defining imaging feature
read back from the generated images, boxes, misregistration, scaling, sizes and shapes, determinism."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.synthetic.lesion_types import (
    CLASS_NAMES,
    DEFAULT_PRIORS,
    PHASES,
    REFERENCE_PHASE,
    Nuisance,
    _anatomy,
    generate_lesion_types_dataset,
    jittered_box,
    make_case,
)
from nnunet_mvext.synthetic.multiphase import stratified_class_counts

T2, DWI, IN, OUT, PRE, ART, VEN, DEL = range(8)
#: no global scaling, bias, blur or steatosis, little noise: the compartments read back from the images
CLEAN = Nuisance(scale_sd=0.0, bias=0.0, noise=0.01, blur=0.0, steatosis=False)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("raw"))
    boxes = generate_lesion_types_dataset(folder, dataset_id=61, num_train=50, num_test=25, shape=(24, 24, 24),
                                          seed=3)
    voxels = generate_lesion_types_dataset(folder, dataset_id=62, num_train=50, num_test=25, shape=(24, 24, 24),
                                           seed=3, box_labels=False)
    return boxes, voxels


def _read(folder, name):
    return sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, name + ".nii.gz")))


def test_layout_is_the_first_generators(raw):
    dataset, _ = raw
    meta = json.loads(Path(dataset.folder, "dataset.json").read_text())
    assert meta["channel_names"] == {str(i): p for i, p in enumerate(PHASES)}
    assert meta["labels"] == {"background": 0, "liver": 1, "lesion": 2} and meta["numTraining"] == 50
    assert meta["classification"]["class_names"] == {str(k): n for k, n in enumerate(CLASS_NAMES)}
    assert len(meta["classification"]["labels"]) == 50
    assert len(os.listdir(os.path.join(dataset.folder, "imagesTr"))) == 8 * 50
    assert len(os.listdir(os.path.join(dataset.folder, "imagesTs"))) == 8 * 25
    with open(os.path.join(dataset.labels_ts, "classification.csv")) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["case_id", "class"] and len(rows) == 26
    assert {r[0]: int(r[1]) for r in rows[1:]} == {c.case_id: c.label for c in dataset.test_cases}
    truth = json.loads(Path(dataset.folder, "cases.json").read_text())
    assert [c["class_name"] for c in truth["Ts"]] == [CLASS_NAMES[c.label] for c in dataset.test_cases]
    assert _read(dataset.folder, "imagesTr/case_000_0005").shape == (24, 24, 24)


def test_class_priors_are_honoured(raw):
    dataset, _ = raw
    priors = np.array(DEFAULT_PRIORS) / sum(DEFAULT_PRIORS)
    for cases, n in ((dataset.train_cases, 50), (dataset.test_cases, 25)):
        counts = np.bincount([c.label for c in cases], minlength=7)
        assert counts.tolist() == stratified_class_counts(n, priors).tolist()
    train = np.bincount([c.label for c in dataset.train_cases], minlength=7)
    assert train[CLASS_NAMES.index("Hepatocellular_carcinoma")] == 16  # 0.32 of 50
    with pytest.raises(MVExtError, match="one per type"):
        generate_lesion_types_dataset(os.path.dirname(dataset.folder), dataset_id=63, class_priors=[1, 1])


def test_boxes_cover_the_lesion_loosely(raw):
    boxes, voxels = raw
    for case in boxes.train_cases[:12]:
        box = _read(boxes.folder, f"labelsTr/{case.case_id}") == 2
        lesion = _read(voxels.folder, f"labelsTr/{case.case_id}") == 2
        assert lesion.any() and np.all(box[lesion])
        where_box, where_lesion = np.nonzero(box), np.nonzero(lesion)
        for wb, wl in zip(where_box, where_lesion):
            assert 0 <= wl.min() - wb.min() <= 2 and 0 <= wb.max() - wl.max() <= 2
        assert box.sum() == np.prod([wb.max() - wb.min() + 1 for wb in where_box])  # a filled box
        # one seed, the same images with and without boxes
        assert np.array_equal(_read(boxes.folder, f"imagesTr/{case.case_id}_0000"),
                              _read(voxels.folder, f"imagesTr/{case.case_id}_0000"))
    seg = np.zeros((10, 10, 10), dtype=np.uint8)
    seg[4:6, 4:6, 4:6] = 2
    grown = [int((jittered_box(seg, np.random.default_rng(s), 2) == 2).sum()) for s in range(20)]
    assert min(grown) >= 8 and max(grown) > 8


def _regions(images, seg):
    """Lesion edge voxels, lesion core (normalised depth >= 0.5) and liver far from the lesion."""
    lesion = seg == 2
    edt = ndimage.distance_transform_edt(np.pad(lesion, 1))[1:-1, 1:-1, 1:-1]
    top = edt.max()
    core = lesion & ((edt - 1) / max(top - 1, 1e-6) >= 0.5)
    edge = lesion & (edt == 1)
    far_liver = (seg == 1) & ~ndimage.binary_dilation(lesion, iterations=6)
    return lesion, edge, core, far_liver, top


def _cases(label, count=4, min_depth=3.5):
    """Clean 48^3 cases of ``label`` whose lesion is at least ``min_depth`` voxels deep."""
    out = []
    for seed in range(60):
        images, seg, truth = make_case((48, 48, 48), label, np.random.default_rng([seed, label]), CLEAN)
        regions = _regions(images, seg)
        if regions[-1] >= min_depth:
            out.append((images, truth, *regions[:-1]))
        if len(out) == count:
            return out
    raise AssertionError(f"no {count} cases of {CLASS_NAMES[label]} with a lesion {min_depth} voxels deep")


def mean(images, p, mask):
    return float(images[p][mask].mean())


def test_cyst_is_t2_bright_unrestricted_and_never_enhances():
    for images, _, lesion, _, _, liver in _cases(4):
        assert mean(images, T2, lesion) > 2.5 * mean(images, T2, liver)
        assert mean(images, DWI, lesion) < 1.3 * mean(images, DWI, liver)
        dynamic = [mean(images, p, lesion) for p in (PRE, ART, VEN, DEL)]
        assert max(dynamic) / min(dynamic) < 1.03, dynamic
        assert mean(images, VEN, liver) > 1.5 * mean(images, PRE, liver)  # while the liver enhances


def test_hemangioma_t2_bright_with_peripheral_nodular_fill_in():
    for images, truth, lesion, _, _, liver in _cases(0, min_depth=4):
        assert mean(images, T2, lesion) > 2.0 * mean(images, T2, liver)
        enhanced = {p: lesion & (images[p] > images[PRE] + 0.6) for p in (ART, VEN, DEL)}
        fractions = [enhanced[p].sum() / lesion.sum() for p in (ART, VEN, DEL)]
        if not truth["features"]["flash_filling"]:
            assert fractions[0] < fractions[1] < fractions[2] and fractions[2] > 0.5, fractions
            depth = ndimage.distance_transform_edt(np.pad(lesion, 1))[1:-1, 1:-1, 1:-1]
            assert depth[enhanced[ART]].mean() < depth[lesion].mean()  # nodules at the periphery


def test_fnh_arterial_then_iso_with_late_enhancing_t2_bright_scar():
    scars = 0
    for images, truth, lesion, _, _, liver in _cases(5, count=6):
        scar = lesion & (images[T2] > 1.6 * mean(images, T2, liver))
        tissue = lesion & ~scar
        assert mean(images, ART, tissue) > mean(images, ART, liver) + 0.3
        for p in (VEN, DEL):
            assert abs(mean(images, p, tissue) / mean(images, p, liver) - 1) < 0.1
        assert scar.any() == truth["features"]["scar"]
        if scar.any():
            scars += 1
            assert mean(images, ART, scar) < mean(images, ART, tissue)
            assert mean(images, DEL, scar) > mean(images, DEL, liver)
    assert scars >= 2


def test_hcc_wash_in_wash_out_capsule_and_fat():
    capsules = 0
    for images, truth, _, edge, core, liver in _cases(6, count=6):
        assert mean(images, ART, core) > mean(images, ART, liver)
        assert mean(images, DEL, core) < mean(images, DEL, liver)
        assert mean(images, VEN, core) < mean(images, VEN, liver)
        if truth["features"]["capsule"]:
            capsules += 1
            assert mean(images, DEL, edge) > mean(images, DEL, core) + 0.3
        drop = mean(images, OUT, core) / mean(images, IN, core)
        assert drop < 0.75 if truth["features"]["fat"] else abs(drop - 1) < 0.03
    assert capsules >= 2


def test_abscess_restricted_cavity_enhancing_wall_and_perilesional_hyperaemia():
    for images, _, lesion, edge, core, liver in _cases(2):
        assert mean(images, DWI, core) > 2.0 * mean(images, DWI, liver)
        assert abs(mean(images, DEL, core) / mean(images, PRE, core) - 1) < 0.15  # the pus does not enhance
        assert mean(images, VEN, edge) > mean(images, PRE, edge) + 0.6
        ring = ndimage.binary_dilation(lesion, iterations=2) & ~lesion & (images[T2] > 0)
        assert mean(images, ART, ring) > mean(images, ART, liver) + 0.2


def test_cholangiocarcinoma_rim_then_progressive_central_enhancement():
    for images, _, _, edge, core, liver in _cases(1):
        assert mean(images, ART, edge) > mean(images, ART, core)
        assert mean(images, DEL, core) > mean(images, DEL, liver)
        assert mean(images, DEL, core) > mean(images, ART, core) + 0.5


def test_metastasis_target_with_peripheral_wash_out():
    for images, _, _, edge, core, liver in _cases(3):
        assert mean(images, ART, edge) > mean(images, ART, core)
        assert mean(images, DEL, edge) < mean(images, DEL, liver)
        assert mean(images, DEL, core) < mean(images, DEL, liver)
        assert mean(images, DWI, edge) > 1.5 * mean(images, DWI, liver)


def test_misregistration_shifts_every_phase_but_the_reference():
    still, _, _ = make_case((32, 32, 32), 6, np.random.default_rng(5), Nuisance(noise=0.0, bias=0.0))
    moved, _, truth = make_case((32, 32, 32), 6, np.random.default_rng(5),
                                Nuisance(noise=0.0, bias=0.0, misregistration_voxels=2))
    shifts = np.array(truth["shift"])
    assert np.all(np.abs(shifts) <= 2) and not shifts[REFERENCE_PHASE].any() and shifts.any()
    for p in range(8):
        assert np.allclose(moved[p], np.roll(still[p], tuple(shifts[p]), axis=(0, 1, 2)))


def test_global_scale_per_case_and_phase():
    clean, _, _ = make_case((24, 24, 24), 3, np.random.default_rng(9), Nuisance(scale_sd=0.0, noise=0.0, bias=0.0))
    scaled, _, truth = make_case((24, 24, 24), 3, np.random.default_rng(9), Nuisance(noise=0.0, bias=0.0))
    scale = np.array(truth["scale"])
    assert np.ptp(np.log(scale)) > 0.1
    for p in range(8):
        assert np.allclose(scaled[p], scale[p] * clean[p], rtol=1e-4, atol=1e-5)


def test_lesion_sizes_span_a_few_voxels_to_a_third_of_the_liver_and_are_not_balls():
    fractions, roundness = [], []
    for seed in range(50):
        _, liver, lesion, liver_voxels = _anatomy((48, 48, 48), np.random.default_rng(seed), (0.1, 0.35))
        assert np.all(liver[lesion]) and lesion.sum() >= 20
        fractions.append(lesion.sum() / liver_voxels)
        if lesion.sum() >= 300:
            centre = np.argwhere(lesion).mean(0)
            grid = np.indices(lesion.shape).transpose(1, 2, 3, 0)
            ball = ((grid - centre) ** 2).sum(-1) <= (3 * lesion.sum() / (4 * np.pi)) ** (2 / 3)
            roundness.append((ball ^ lesion).sum() / lesion.sum())
    assert min(fractions) * 17000 < 60 and max(fractions) > 0.2 and max(fractions) <= 0.34
    assert np.median(roundness) > 0.15


def test_same_seed_same_case_other_seed_another(tmp_path):
    a, seg_a, truth_a = make_case((24, 24, 24), 0, np.random.default_rng(1), Nuisance(misregistration_voxels=2))
    b, seg_b, truth_b = make_case((24, 24, 24), 0, np.random.default_rng(1), Nuisance(misregistration_voxels=2))
    c, _, _ = make_case((24, 24, 24), 0, np.random.default_rng(2), Nuisance(misregistration_voxels=2))
    assert np.array_equal(a, b) and np.array_equal(seg_a, seg_b) and truth_a == truth_b and not np.allclose(a, c)
    for dataset_id in (71, 72):
        generate_lesion_types_dataset(str(tmp_path), dataset_id=dataset_id, num_train=7, num_test=2,
                                      shape=(20, 20, 20), seed=4)
    first, second = (os.path.join(str(tmp_path), f"Dataset0{i}_MVExtLesionTypes") for i in (71, 72))
    assert Path(first, "cases.json").read_text() == Path(second, "cases.json").read_text()
    assert np.array_equal(_read(first, "imagesTs/case_008_0003"), _read(second, "imagesTs/case_008_0003"))


def test_make_dataset_cli_lesion_types(tmp_path):
    from nnunet_mvext.cli import main

    assert main(["make-dataset", "--generator", "lesion-types", "--raw", str(tmp_path), "--dataset-id", "73",
                 "--num-train", "7", "--num-test", "0", "--shape", "16", "16", "16", "--box-labels"]) == 0
    meta = json.loads(Path(tmp_path, "Dataset073_MVExtLesionTypes", "dataset.json").read_text())
    assert list(meta["channel_names"].values()) == list(PHASES) and "bounding box" in meta["description"]
    assert main(["make-dataset", "--generator", "lesion-types", "--raw", str(tmp_path), "--dataset-id", "74",
                 "--num-phases", "3"]) == 2
    assert not os.path.exists(os.path.join(str(tmp_path), "Dataset074_MVExtLesionTypes"))
