"""The challenge's official lesion crops (``classification_dataset/images/``) and where the box lies in them.

Source: ``main/preprocess/crop_roi.py`` of LMMMEng/LLD-MMRI2023 (``crop_lesion``, ``xy_extension=16``,
``z_extension=2``). On the numpy array ``a = sitk.GetArrayFromImage(series)`` (axes ``z, y, x``; shape
``(Z, Y, X)``) and a box ``x_min, x_max, y_min, y_max, z_min, z_max`` (x, y max exclusive, z max inclusive) it does,
in this order:

1. skip the box when ``z_min >= Z`` or ``z_max >= Z``;
2. padding from the unclamped extended box, **x against ``Y = shape[1]`` and y against ``X = shape[2]``** (the
   script's order; the axes are swapped with respect to the array, which matters for non-square slices)::

       pad_x_lo = |x_min - e| if x_min - e < 0 else 0      pad_x_hi = x_max + e - Y if x_max + e > Y else 0
       pad_y_lo = |y_min - e| if y_min - e < 0 else 0      pad_y_hi = y_max + e - X if y_max + e > X else 0

3. clamp: ``x_min = max(x_min - e, 0)``, ``x_max = min(x_max + e, Y)``, ``y`` likewise against ``X``,
   ``z_min = max(z_min - ez, 0)``, ``z_max = min(z_max + ez, Z)`` (no padding in z);
4. ``roi = a[z_min:z_max + 1, y_min:y_max, x_min:x_max]`` (numpy clips a slice end beyond the array; a single slice
   when ``Z == 1`` or ``z_min == z_max``), then zero padding ``((0, 0), (pad_y_lo, pad_y_hi), (pad_x_lo, pad_x_hi))``;
5. written with ``sitk.GetImageFromArray(roi)`` (spacing 1, origin 0) to ``<patient>/<phase>.nii.gz`` for lesion
   ``0`` and ``<patient>_<idx>/<phase>.nii.gz`` for lesion ``idx``.

**Inverse** (:func:`box_in_crop`): crop index ``i`` along x holds the series' column ``x_min - e + i`` (the low-side
padding makes up exactly what the clamp removed), likewise y; along z crop slice ``k`` is series slice
``max(z_min - ez, 0) + k``. So the box covers crop indices ``e .. e + (x_max - x_min) - 1`` in x and y and
``min(z_min, ez) .. min(z_min, ez) + z_max - z_min`` in z, **whatever the series' size**. The series' size (when
known) only tells which crop voxels are the script's zero padding or lie past the series (:func:`padded_voxels`),
including a box cut by the swapped clamp.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from nnunet_mvext.lld_mmri.annotation import Box

#: crop_roi.py's ``xy_extension`` and ``z_extension``
XY_EXTENSION = 16
Z_EXTENSION = 2


def crop_folder(patient: str, lesion: str) -> str:
    """crop_roi.py's folder of a lesion: ``<patient>`` for lesion 0, ``<patient>_<idx>`` otherwise."""
    return patient if int(lesion) == 0 else f"{patient}_{lesion}"


def official_crop(array: np.ndarray, box: Mapping[str, int] | Box, xy_extension: Optional[int] = XY_EXTENSION,
                  z_extension: Optional[int] = Z_EXTENSION) -> Optional[np.ndarray]:
    """crop_roi.py's crop of ``array`` (``sitk.GetArrayFromImage`` order z, y, x) around ``box``, statement by
    statement (module docstring); None where the script skips the box (beyond the slice count)."""
    b = box.as_dict() if isinstance(box, Box) else box
    x_min, y_min, x_max, y_max = int(b["x_min"]), int(b["y_min"]), int(b["x_max"]), int(b["y_max"])
    z_min, z_max = int(b["z_min"]), int(b["z_max"])
    temp_image = array
    if z_min >= temp_image.shape[0] or z_max >= temp_image.shape[0]:
        return None
    x_padding_min = y_padding_min = x_padding_max = y_padding_max = 0
    if xy_extension is not None:
        x_padding_min = int(abs(x_min - xy_extension)) if x_min - xy_extension < 0 else 0
        y_padding_min = int(abs(y_min - xy_extension)) if y_min - xy_extension < 0 else 0
        x_padding_max = int(abs(x_max + xy_extension - temp_image.shape[1])) \
            if x_max + xy_extension > temp_image.shape[1] else 0
        y_padding_max = int(abs(y_max + xy_extension - temp_image.shape[2])) \
            if y_max + xy_extension > temp_image.shape[2] else 0
        x_min = max(x_min - xy_extension, 0)
        y_min = max(y_min - xy_extension, 0)
        x_max = min(x_max + xy_extension, temp_image.shape[1])
        y_max = min(y_max + xy_extension, temp_image.shape[2])
    if z_extension is not None:
        z_min = max(z_min - z_extension, 0)
        z_max = min(z_max + z_extension, temp_image.shape[0])
    if temp_image.shape[0] == 1:
        roi = np.expand_dims(temp_image[0, y_min:y_max, x_min:x_max], axis=0)
    elif z_min == z_max:
        roi = np.expand_dims(temp_image[z_min, y_min:y_max, x_min:x_max], axis=0)
    else:
        roi = temp_image[z_min:(z_max + 1), y_min:y_max, x_min:x_max]
    if xy_extension is not None:
        roi = np.pad(roi, ((0, 0), (y_padding_min, y_padding_max), (x_padding_min, x_padding_max)), "constant")
    return roi


def crop_start(box: Box, margin: Sequence[int] = (XY_EXTENSION, XY_EXTENSION, Z_EXTENSION)) -> np.ndarray:
    """The series' ITK index ``(x, y, z)`` of the crop's voxel ``(0, 0, 0)`` (module docstring, inverse)."""
    return np.array([box.x_min - margin[0], box.y_min - margin[1], max(box.z_min - margin[2], 0)])


def box_in_crop(box: Box, margin: Sequence[int] = (XY_EXTENSION, XY_EXTENSION, Z_EXTENSION)) -> Box:
    """The series box ``box`` in the crop's own index space (x, y max exclusive, z max inclusive)."""
    start = crop_start(box, margin)
    return Box(box.x_min - int(start[0]), box.y_min - int(start[1]), box.z_min - int(start[2]),
               box.x_max - int(start[0]), box.y_max - int(start[1]), box.z_max - int(start[2]))


def padded_voxels(box: Box, series_size: Sequence[int], crop_shape: Sequence[int],
                  margin: Sequence[int] = (XY_EXTENSION, XY_EXTENSION, Z_EXTENSION)) -> int:
    """How many voxels of a crop of numpy shape ``crop_shape`` (z, y, x) lie outside the series of ITK size
    ``series_size`` (x, y, z): the script's zero padding, and the columns its swapped clamp cut off."""
    start = crop_start(box, margin)
    # the data the script copied end at min(max + e, Y, X) along x and y (its clamp, then numpy's), at Z along z
    ends = (min(box.x_max + margin[0], series_size[0], series_size[1]),
            min(box.y_max + margin[1], series_size[0], series_size[1]), series_size[2])
    inside = [int(np.sum((start[a] + np.arange(n) >= 0) & (start[a] + np.arange(n) < ends[a])))
              for a, n in zip(range(3), (crop_shape[2], crop_shape[1], crop_shape[0]))]
    return int(np.prod(crop_shape) - np.prod(inside))
