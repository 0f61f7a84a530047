"""The geometry of an LLD-MMRI series: from ``Annotation.json``, not from the NIfTI header.

The release's NIfTI headers carry no geometry: every series reads spacing 1 x 1 x 1, origin 0 and no direction
(LMMMEng/LLD-MMRI2023 issues #2 and #8: "the actual spacing information is not recorded in the nii file"; the
organisers: treat the affine as orthonormal). The true geometry is in ``labels/Annotation.json``, per series
(:mod:`~nnunet_mvext.lld_mmri.annotation`): ``pixel_spacing`` (in-plane), ``slice_spacing`` (z; issue #6: updated by
the organisers on 2023-06-05, so an older copy may lack it) and ``origin``.

**Convention adopted** (from the second-place team's ``main/misc/remake_original_image.py`` of aa1234241/lld_submit,
which writes the nibabel (RAS) affine ``[[-sx, 0, 0, -ox], [0, -sy, 0, -oy], [0, 0, sz, oz]]``; in ITK's LPS frame
that is spacing ``(sx, sy, sz)``, origin ``(ox, oy, oz)`` and the identity direction)::

    spacing   = (pixel_spacing[0], pixel_spacing[1], slice_spacing)
    origin    = origin                                   (mm, ITK's LPS frame)
    direction = the header's (the identity in the release)

This convention is **unverified on the real data**: the project has no copy of the release; it matches the only
public code that rebuilds the images.

**Field by field** (:func:`series_grid`, ``source="json"``): each of in-plane spacing, z spacing and origin is the
JSON's value where present, else the header's, with a named warning. z comes from ``slice_spacing``; a series with
``slice_thickness`` but no ``slice_spacing`` (an older JSON copy) uses ``slice_thickness``, with a warning (the
thickness of a slice is not the distance between slices). A series whose JSON has no geometry key at all and whose
header is the release's placeholder (spacing 1, origin 0) has **no usable geometry**: the import treats the phase as
missing. ``source="header"`` takes the header as it is (for comparison, and for copies whose headers were fixed).

**Disagreement** between header and JSON beyond :data:`SPACING_TOLERANCE` (relative) in a spacing or
:data:`ORIGIN_TOLERANCE_MM` in the origin is reported by the import once, with counts (on the release every header
disagrees: its headers hold no geometry).

**Flipped series** (``flipped=True``; the second-place team lists patients stored upside down; what exactly is
flipped is not established): fixed in the geometry only, never by rewriting pixels or boxes: the z axis is reversed,
``direction[:, 2] -> -direction[:, 2]`` and ``origin -> origin + (N - 1) sz direction[:, 2]`` (N slices), so slice
``k`` lies where slice ``N - 1 - k`` lay before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from nnunet_mvext.lld_mmri.alignment import Grid
from nnunet_mvext.lld_mmri.annotation import SeriesEntry

GEOMETRY_SOURCES = ("json", "header")
#: relative difference in a spacing above which header and JSON disagree
SPACING_TOLERANCE = 0.01
#: difference in the origin (mm, per axis) above which header and JSON disagree
ORIGIN_TOLERANCE_MM = 0.5
#: the second-place team's list of flipped patients (aa1234241/lld_submit, main/misc/make_annotation.py)
PUBLISHED_FLIPPED_PATIENTS = {
    "training/validation": ("MR745", "MR2126", "MR2603", "MR3573", "MR8888", "MR11115", "MR11696", "MR13219",
                            "MR13467", "MR13762", "MR14342", "MR14400", "MR17022", "MR17217", "MR17289", "MR19145"),
    "test": ("MR1872", "MR11656", "MR14362", "MR14624", "MR18858"),
}


@dataclass(frozen=True)
class SeriesGeometry:
    """A series' grid and where each part came from.

    ``sources``: ``{"inplane_spacing" | "z_spacing" | "origin": "json" | "json slice_thickness" | "header"}``;
    ``warnings``: the fields that fell back (one line each); ``disagreements``: the fields where header and JSON
    differ beyond the tolerances; ``usable``: False when the series has no geometry at all (module docstring).
    """

    grid: Grid
    sources: dict
    warnings: tuple = ()
    disagreements: tuple = ()
    usable: bool = True
    flipped: bool = False
    extra: dict = field(default_factory=dict)


def is_placeholder_header(header: Grid) -> bool:
    """True for the release's header geometry: spacing 1 x 1 x 1 and origin 0 (no geometry recorded)."""
    return np.allclose(header.spacing, 1.0) and np.allclose(header.origin, 0.0)


def flipped_grid(grid: Grid) -> Grid:
    """``grid`` with its z axis reversed in place (module docstring): the same voxels, slice order upside down."""
    direction = np.array(grid.direction, dtype=float).reshape(3, 3)
    column = direction[:, 2].copy()
    origin = np.array(grid.origin, dtype=float) + (grid.size[2] - 1) * grid.spacing[2] * column
    direction[:, 2] = -column
    return Grid(grid.size, grid.spacing, tuple(float(v) for v in origin), tuple(float(v) for v in direction.ravel()))


def _disagrees(json_value, header_value, relative: bool) -> bool:
    a, b = np.asarray(json_value, dtype=float), np.asarray(header_value, dtype=float)
    if relative:
        return bool(np.any(np.abs(a - b) > SPACING_TOLERANCE * np.abs(a)))
    return bool(np.any(np.abs(a - b) > ORIGIN_TOLERANCE_MM))


def series_grid(entry: SeriesEntry, header: Grid, source: str = "json", flipped: bool = False) -> SeriesGeometry:
    """The grid of the series ``entry`` whose header geometry is ``header`` (its size is always the header's), from
    ``source`` ``json`` (field by field, module docstring) or ``header``; ``flipped`` reverses its z axis."""
    if source not in GEOMETRY_SOURCES:
        raise ValueError(f"geometry source {source!r}; allowed: {', '.join(GEOMETRY_SOURCES)}")
    if source == "header":
        grid = flipped_grid(header) if flipped else header
        return SeriesGeometry(grid, {"inplane_spacing": "header", "z_spacing": "header", "origin": "header"},
                              flipped=flipped)
    sources, warnings, disagreements = {}, [], []
    if entry.pixel_spacing is not None:
        inplane = tuple(entry.pixel_spacing)
        sources["inplane_spacing"] = "json"
        if _disagrees(inplane, header.spacing[:2], True):
            disagreements.append("inplane_spacing")
    else:
        inplane = tuple(header.spacing[:2])
        sources["inplane_spacing"] = "header"
        warnings.append(f"no 'pixel_spacing' in the annotation: the header's in-plane spacing {inplane} is used")
    if entry.slice_spacing is not None:
        z = entry.slice_spacing
        sources["z_spacing"] = "json"
    elif entry.slice_thickness is not None:
        z = entry.slice_thickness
        sources["z_spacing"] = "json slice_thickness"
        warnings.append(f"no 'slice_spacing' in the annotation (a copy older than 2023-06-05?): its "
                        f"'slice_thickness' {z} is used as the z spacing")
    else:
        z = header.spacing[2]
        sources["z_spacing"] = "header"
        warnings.append(f"no 'slice_spacing' or 'slice_thickness' in the annotation: the header's z spacing {z} is "
                        f"used")
    if sources["z_spacing"] != "header" and _disagrees([z], header.spacing[2:], True):
        disagreements.append("z_spacing")
    if entry.origin is not None:
        origin = tuple(entry.origin)
        sources["origin"] = "json"
        if _disagrees(origin, header.origin, False):
            disagreements.append("origin")
    else:
        origin = tuple(header.origin)
        sources["origin"] = "header"
        warnings.append(f"no 'origin' in the annotation: the header's origin {origin} is used")
    usable = not (all(v == "header" for v in sources.values()) and is_placeholder_header(header))
    grid = Grid(header.size, (float(inplane[0]), float(inplane[1]), float(z)), tuple(float(v) for v in origin),
                header.direction)
    if flipped:
        grid = flipped_grid(grid)
    return SeriesGeometry(grid, sources, tuple(warnings), tuple(disagreements), usable, flipped)


def read_flipped_patients(path: Optional[str]) -> set:
    """Patient ids of a ``--flipped-patients`` file: one per line or separated by spaces or commas; ``#`` starts a
    comment. Read in the encodings :func:`~nnunet_mvext.csv_files.decode_text` accepts (UTF-16 with its mark too)."""
    from nnunet_mvext.csv_files import read_text_lines

    if path is None:
        return set()
    names = set()
    for line in read_text_lines(path, "--flipped-patients file"):
        line = line.split("#", 1)[0]
        names.update(n for n in line.replace(",", " ").split() if n)
    return names
