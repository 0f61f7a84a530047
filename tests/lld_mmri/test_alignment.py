"""Both alignments on a misregistered mock whose lesions are bright blobs: crop puts every phase's lesion at the same
place (within a voxel), resample keeps each phase's physical place (the misregistration)."""

import glob
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mvext.lld_mmri.annotation import PHASES, read_annotation
from nnunet_mvext.lld_mmri.import_release import import_release
from nnunet_mvext.lld_mmri.mock_release import generate_mock_release, lesion_centre

MISREGISTRATION_MM = 8.0


@pytest.fixture(scope="module")
def blob_release(tmp_path_factory):
    """4 patients, one lesion each, exact boxes (no jitter), 8 mm misregistration; every series' voxels replaced by a
    Gaussian blob (sigma 3 mm) at the lesion's true centre in that series, its geometry kept."""
    folder = str(tmp_path_factory.mktemp("blob") / "release")
    mock = generate_mock_release(folder, 4, seed=11, unreleased_fraction=0, multi_lesion_fraction=0,
                                 misregistration_mm=MISREGISTRATION_MM, box_jitter=0, defects=False,
                                 real_release=False)  # the blobs below are drawn on the header geometry
    truth = mock.truth()
    for patient, entries in read_annotation(folder).items():
        for entry in entries:
            path = entry.image_path(folder)
            image = sitk.ReadImage(path)
            size, centre = np.array(image.GetSize()), lesion_centre(truth, patient, "0", entry.phase)
            index = np.stack(np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij"))[::-1]  # x, y, z
            points = np.array(image.GetOrigin())[:, None, None, None] + \
                np.array(image.GetSpacing())[:, None, None, None] * index
            blob = np.exp(-((points - centre[:, None, None, None]) ** 2).sum(0) / (2 * 3.0 ** 2))
            out = sitk.GetImageFromArray((1000 * blob).astype(np.int16))
            out.CopyInformation(image)
            sitk.WriteImage(out, path)
    return mock


def _centroids(folder: str, case: str) -> dict:
    """Per phase, the blob's centroid in the case's array, in mm along ITK's x, y, z (index times spacing)."""
    out = {}
    for c, phase in enumerate(PHASES):
        image = sitk.ReadImage(glob.glob(os.path.join(folder, "images*", f"{case}_{c:04d}.nii.gz"))[0])
        array = sitk.GetArrayFromImage(image).astype(float)
        array = np.where(array > 0.3 * array.max(), array, 0)
        index = np.array([(np.indices(array.shape)[a] * array).sum() / array.sum() for a in range(3)])[::-1]
        out[phase] = index * np.array(image.GetSpacing())
    return out


def test_crop_aligns_the_phases_by_their_boxes(blob_release, tmp_path):
    result = import_release(blob_release.folder, 993, raw_folder=str(tmp_path), alignment="crop")
    truth = blob_release.truth()
    assert len(result.train_cases) == 4
    largest_shift = 0.0
    for case in result.train_cases:
        patient = case.rsplit("_", 1)[0]
        centroids = _centroids(result.folder, case)
        with open(os.path.join(result.folder, "alignment.json")) as f:
            spacing = np.array(json.load(f)[case]["output"]["spacing"])
        for phase in PHASES:
            # within a voxel of the reference phase's crop grid along every axis (the boxes round to voxels)
            assert np.all(np.abs(centroids[phase] - centroids["C+A"]) <= 1.01 * spacing), (case, phase)
            shift = np.array(truth["patients"][patient]["shift_mm"][phase]) - \
                np.array(truth["patients"][patient]["shift_mm"]["C+A"])
            largest_shift = max(largest_shift, float(np.max(np.abs(shift) / spacing)))
    assert largest_shift > 3  # the misregistration that the boxes absorbed was several voxels


def test_resample_places_every_phase_by_physical_coordinates(blob_release, tmp_path):
    result = import_release(blob_release.folder, 994, raw_folder=str(tmp_path), alignment="resample")
    truth = blob_release.truth()
    for case in result.train_cases:
        centroids = _centroids(result.folder, case)
        spacing = np.array(sitk.ReadImage(os.path.join(result.folder, "imagesTr", f"{case}_0000.nii.gz"))
                           .GetSpacing())
        for phase in PHASES:
            shift = np.array(truth["patients"][case]["shift_mm"][phase]) - \
                np.array(truth["patients"][case]["shift_mm"]["C+A"])
            assert np.all(np.abs(centroids[phase] - centroids["C+A"] - shift) <= 0.5 * spacing), (case, phase)
