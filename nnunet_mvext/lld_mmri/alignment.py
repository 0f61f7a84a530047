"""Putting the eight phases of an LLD-MMRI case on one grid (nnU-Net needs every channel of a case on one grid).

Each series of the release has its own grid (size, spacing, origin) and the phases are not co-registered: the patient
breathes and moves between them. A :class:`Grid` is an ITK geometry; a point ``p`` (mm, ITK's LPS frame) has the
continuous index ``i = (D diag(s))^-1 (p - o)`` (``D`` direction, ``s`` spacing, ``o`` origin), as SimpleITK's
``TransformContinuousIndexToPhysicalPoint`` inverts it. Both ways resample with SimpleITK's
``ResampleImageFilter`` (identity transform, linear interpolation, 0 outside the series) onto an explicit output
grid per phase, so they differ only in the grids:

**crop** (:func:`crop_sampling_grids`, one case per lesion). The output grid is the reference phase's box plus a
margin (the challenge's official crops: 16 voxels in-plane, 2 slices) on the reference series' spacing and
direction: ``size = box size + 2 margin`` voxels, centred on the reference box's centre, so the reference box covers
output indices ``margin .. margin + box size - 1``. Every phase is sampled on a copy of that grid whose centre is the
centre of **its own** box (mapped through its own series' geometry): the phases are translated so that their boxes'
centres coincide, which absorbs the misregistration between them (up to the annotators' box error), and the lesion
sits in the middle of every channel. A phase without a usable box (none annotated for that lesion, or beyond its
image) is sampled around the reference box's centre instead, i.e. by physical coordinates as in resample. All
channels are written with the output grid's geometry (the reference phase's physical space); the label is the
reference box.

**resample** (:func:`resample_sampling_grids`, one case per patient). The output grid is the reference series' full
grid; every phase is resampled onto it by physical coordinates (identity transform), so a phase keeps whatever
misregistration it had. The label holds the reference phase's boxes of all lesions of the patient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from nnunet_mvext.lld_mmri.annotation import Box

#: the challenge's official crop margin: 16 voxels in-plane (x, y), 2 slices (z)
OFFICIAL_MARGIN = (16, 16, 2)


@dataclass(frozen=True)
class Grid:
    """An ITK image geometry: ``size`` and ``spacing`` along ITK's axes (x, y, z), ``origin`` (mm), ``direction``
    (row-major 3x3)."""

    size: tuple
    spacing: tuple
    origin: tuple
    direction: tuple

    @classmethod
    def of(cls, image) -> "Grid":
        """The geometry of an ``sitk.Image`` or of an ``sitk.ImageFileReader`` after ``ReadImageInformation``."""
        return cls(tuple(int(v) for v in image.GetSize()), tuple(float(v) for v in image.GetSpacing()),
                   tuple(float(v) for v in image.GetOrigin()), tuple(float(v) for v in image.GetDirection()))

    def matrix(self) -> np.ndarray:
        """``D diag(spacing)`` (3, 3): continuous index -> physical offset from the origin."""
        return np.array(self.direction, dtype=float).reshape(3, 3) * np.array(self.spacing, dtype=float)

    def physical_point(self, index: Sequence[float]) -> np.ndarray:
        """Continuous ITK index ``(x, y, z)`` -> physical point (mm)."""
        return np.array(self.origin, dtype=float) + self.matrix() @ np.asarray(index, dtype=float)

    def continuous_index(self, point: Sequence[float]) -> np.ndarray:
        """Physical point (mm) -> continuous ITK index ``(x, y, z)``."""
        return np.linalg.solve(self.matrix(), np.asarray(point, dtype=float) - np.array(self.origin, dtype=float))

    def centre(self) -> np.ndarray:
        """The physical point of the continuous index ``(size - 1) / 2``."""
        return self.physical_point((np.array(self.size, dtype=float) - 1) / 2)

    def centred_at(self, point: Sequence[float]) -> "Grid":
        """The same size, spacing and direction, moved so that its centre is ``point``."""
        origin = np.asarray(point, dtype=float) - self.matrix() @ ((np.array(self.size, dtype=float) - 1) / 2)
        return Grid(self.size, self.spacing, tuple(float(v) for v in origin), self.direction)

    def as_dict(self) -> dict:
        return {"size": list(self.size), "spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Grid":
        return cls(tuple(int(v) for v in d["size"]), tuple(float(v) for v in d["spacing"]),
                   tuple(float(v) for v in d["origin"]), tuple(float(v) for v in d["direction"]))


def upright(grid: Grid) -> Grid:
    """The same voxels with every axis whose direction points against its world axis (a negative diagonal entry of
    the direction, e.g. a series whose z axis the flip fix reversed) reversed in index order: the physical region is
    unchanged, the array runs along the world axes. nnU-Net reads arrays and ignores the direction, so a case's output
    grid is made upright for a flipped series to reach the network the right way up."""
    direction = np.array(grid.direction, dtype=float).reshape(3, 3)
    origin = np.array(grid.origin, dtype=float)
    for k in range(3):
        if direction[k, k] < 0:
            origin = origin + (grid.size[k] - 1) * grid.spacing[k] * direction[:, k]
            direction[:, k] = -direction[:, k]
    return Grid(grid.size, grid.spacing, tuple(float(v) for v in origin), tuple(float(v) for v in direction.ravel()))


def box_centre(grid: Grid, box: Box) -> np.ndarray:
    """Physical centre (mm) of ``box`` on the series of geometry ``grid`` (:meth:`Box.centre_index`)."""
    return grid.physical_point(box.centre_index())


def crop_output_grid(reference: Grid, box: Box, margin: Sequence[int] = OFFICIAL_MARGIN) -> Grid:
    """The reference box plus ``margin`` voxels ``(x, y, z)`` on each side, on the reference series' spacing and
    (:func:`upright`) direction, centred on the box: ``size = box.size() + 2 margin``."""
    size = tuple(int(s + 2 * m) for s, m in zip(box.size(), margin))
    return upright(Grid(size, reference.spacing, reference.origin, reference.direction)).centred_at(
        box_centre(reference, box))


def crop_sampling_grids(reference: Grid, reference_box: Box, phase_grids: Mapping[str, Grid],
                        phase_boxes: Mapping[str, Optional[Box]],
                        margin: Sequence[int] = OFFICIAL_MARGIN) -> tuple[Grid, dict[str, Grid]]:
    """``(output grid, {phase: grid to sample that phase on})`` of the crop alignment (module docstring).

    ``phase_grids``: each phase's series geometry; ``phase_boxes``: its box of this lesion, or None (then the
    phase is sampled around the reference box's physical centre).
    """
    output = crop_output_grid(reference, reference_box, margin)
    fallback = box_centre(reference, reference_box)
    sampling = {}
    for phase, grid in phase_grids.items():
        box = phase_boxes.get(phase)
        sampling[phase] = output.centred_at(box_centre(grid, box) if box is not None else fallback)
    return output, sampling


def resample_sampling_grids(reference: Grid, phases: Sequence[str]) -> tuple[Grid, dict[str, Grid]]:
    """``(output grid, {phase: grid})`` of the resample alignment: the reference series' grid (:func:`upright`) for
    every phase."""
    output = upright(reference)
    return output, {phase: output for phase in phases}


def with_geometry(image: sitk.Image, grid: Grid) -> sitk.Image:
    """``image`` with ``grid``'s spacing, origin and direction (in place; the pixels are not touched)."""
    image.SetSpacing(grid.spacing)
    image.SetOrigin(grid.origin)
    image.SetDirection(grid.direction)
    return image


def sample_channel(image: sitk.Image, sampling: Grid, output: Grid,
                   interpolator: int = sitk.sitkLinear) -> sitk.Image:
    """``image`` resampled onto ``sampling`` (identity transform, 0 outside the image), as float32, written with
    ``output``'s geometry (the case's common header; ``sampling`` differs from it by a translation in crop)."""
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(v) for v in sampling.size])
    resampler.SetOutputSpacing(sampling.spacing)
    resampler.SetOutputOrigin(sampling.origin)
    resampler.SetOutputDirection(sampling.direction)
    resampler.SetTransform(sitk.Transform())
    resampler.SetInterpolator(interpolator)
    resampler.SetDefaultPixelValue(0)
    resampler.SetOutputPixelType(sitk.sitkFloat32 if interpolator != sitk.sitkNearestNeighbor else
                                 sitk.sitkUInt8)
    return with_geometry(resampler.Execute(image), output)


def placeholder(output: Grid) -> sitk.Image:
    """An all-zero float32 channel on ``output`` (a missing phase; the case's record names it)."""
    return with_geometry(sitk.Image([int(v) for v in output.size], sitk.sitkFloat32), output)


def box_voxels(box: Box, source: Grid, target: Grid) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Inclusive ITK index corners ``(lo, hi)`` on ``target`` of the voxel box ``box`` of the series ``source``:
    its first and last voxel centres mapped through physical space and rounded, clipped to ``target``. None when
    the box lies outside ``target``."""
    first, last = np.array(box.first_voxel(), dtype=float), np.array(box.last_voxel(), dtype=float)
    corners = np.array([[(first, last)[b >> k & 1][k] for k in range(3)] for b in range(8)])
    index = np.array([target.continuous_index(source.physical_point(c)) for c in corners])
    lo, hi = np.rint(index.min(0)).astype(int), np.rint(index.max(0)).astype(int)
    lo, hi = np.maximum(lo, 0), np.minimum(hi, np.array(target.size) - 1)
    return None if np.any(lo > hi) else (lo, hi)


def box_label(output: Grid, boxes: Sequence[tuple[Box, Grid]], value: int = 1) -> sitk.Image:
    """A uint8 label on ``output``: ``value`` in every box ``(box, its series' grid)`` (filled, as
    ``boxes-to-labels`` writes boxes), 0 elsewhere."""
    array = np.zeros(tuple(reversed(output.size)), dtype=np.uint8)  # numpy order z, y, x
    for box, source in boxes:
        corners = box_voxels(box, source, output)
        if corners is not None:
            lo, hi = corners
            array[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = value
    return with_geometry(sitk.GetImageFromArray(array), output)


def mask_label(mask: sitk.Image, sampling: Grid, output: Grid, value: int = 1) -> sitk.Image:
    """A released lesion mask (any non-zero voxel is lesion) on ``output``, nearest-neighbour, as a uint8 label."""
    binary = sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8)
    label = sample_channel(binary, sampling, output, sitk.sitkNearestNeighbor)
    return label * value if value != 1 else label
