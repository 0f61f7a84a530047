"""Checks of an LLD-MMRI series that the import reports but never acts on silently.

- :func:`orientation_outliers`: the eight series of a patient are not registered but close; with the right geometry a
  lesion's box centres in the series lie near one another in physical space. A series whose centre lies farther than
  ``max(30 mm, 3 slice spacings)`` from the median of the **other** phases' centres is reported (a series stored upside
  down, a wrong origin). A patient whose series are all flipped alike cannot be seen this way: the published list of
  flipped patients (``--flipped-patients``) is the fix, detection changes nothing.
- :func:`repeated_slices`: blocks of slices stored twice in one series (LMMMEng/LLD-MMRI2023 issue #9: "the upper
  part of the kidney is repeated" in the In/Out Phase series of MR2603, MR3573, MR13219, MR17022, MR17217, "maybe
  others"): an exact byte repeat of a non-constant slice anywhere in the series.
- :func:`inside_fraction`: how much of the region a phase is sampled on lies inside that phase's series; a phase placed
  by physical coordinates mostly outside its series (more than half, :data:`MIN_INSIDE_FRACTION`) would be an all-zero
  channel recorded as present, so the import records it as missing.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import numpy as np

from nnunet_mvext.lld_mmri.alignment import Grid

#: a box centre farther than max(this, 3 slice spacings) from the other phases' median is reported
ORIENTATION_THRESHOLD_MM = 30.0
ORIENTATION_SLICE_SPACINGS = 3.0
#: a phase whose sampled region lies less than this fraction inside its series is missing
MIN_INSIDE_FRACTION = 0.5


def orientation_outliers(centres: Mapping[str, np.ndarray], z_spacing: Mapping[str, float]
                         ) -> list[tuple[str, float, float]]:
    """``[(phase, distance mm, threshold mm)]`` of the phases whose centre ``centres[phase]`` (mm, (3,)) lies farther
    than ``max(30, 3 z_spacing[phase])`` from the median of the other phases' centres (needs >= 2 others)."""
    out = []
    for phase, centre in centres.items():
        others = [np.asarray(c, dtype=float) for p, c in centres.items() if p != phase]
        if len(others) < 2:
            continue
        distance = float(np.linalg.norm(np.asarray(centre, dtype=float) - np.median(np.stack(others), axis=0)))
        threshold = max(ORIENTATION_THRESHOLD_MM, ORIENTATION_SLICE_SPACINGS * float(z_spacing[phase]))
        if distance > threshold:
            out.append((phase, distance, threshold))
    return out


def repeated_slices(array: np.ndarray) -> list[tuple[int, int, int]]:
    """Blocks of repeated slices of a volume ``array`` (z, y, x): ``[(first, repeat, length)]``, slices
    ``repeat .. repeat + length - 1`` equal ``first .. first + length - 1`` byte for byte. Constant slices (empty
    background, padding) are not counted."""
    seen: dict[str, int] = {}
    pairs = []
    for k in range(array.shape[0]):
        plane = np.ascontiguousarray(array[k])
        if plane.size == 0 or plane.min() == plane.max():
            continue
        digest = hashlib.sha1(plane.tobytes()).hexdigest()
        if digest in seen:
            pairs.append((seen[digest], k))
        else:
            seen[digest] = k
    blocks: list[tuple[int, int, int]] = []
    for first, repeat in pairs:
        if blocks and blocks[-1][0] + blocks[-1][2] == first and blocks[-1][1] + blocks[-1][2] == repeat:
            blocks[-1] = (blocks[-1][0], blocks[-1][1], blocks[-1][2] + 1)
        else:
            blocks.append((first, repeat, 1))
    return blocks


def describe_repeats(blocks: list[tuple[int, int, int]]) -> str:
    return "; ".join(f"slices {r}..{r + n - 1} repeat slices {f}..{f + n - 1}" for f, r, n in blocks)


def inside_fraction(sampling: Grid, series: Grid, points: int = 5) -> float:
    """The fraction of a ``points``^3 lattice over ``sampling``'s voxel centres that lies within ``series``' voxels
    (continuous index in ``[-0.5, size - 0.5]`` per axis)."""
    axes = [np.linspace(0, s - 1, points) for s in sampling.size]
    index = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    physical = np.array(sampling.origin, dtype=float) + index @ sampling.matrix().T
    inside = np.linalg.solve(series.matrix(), (physical - np.array(series.origin, dtype=float)).T).T
    ok = np.all((inside >= -0.5) & (inside <= np.array(series.size, dtype=float) - 0.5), axis=1)
    return float(ok.mean())
