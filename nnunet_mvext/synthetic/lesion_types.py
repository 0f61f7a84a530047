"""A second synthetic classification dataset: the seven LLD-MMRI 2023 lesion types by their textbook MRI features.

Designed independently of :mod:`nnunet_mvext.synthetic.multiphase` (whose classes are abstract enhancement curves):
here a class is a liver lesion type whose compartments (core, rim or wall, nodules, central scar, capsule,
perilesional liver) each have a signal in the eight LLD-MMRI series, ``T2WI, DWI, In Phase, Out Phase, C-pre, C+A,
C+V, C+Delay`` (channels 0-7, the challenge's series names), and classes 0-6 in the challenge's order
(:data:`nnunet_mvext.lld_mmri.annotation.CLASS_NAMES`). It writes the same nnU-Net raw layout as the first
generator, so the benchmarks run on either unchanged.

**Signal model.** Units are the liver's pre-contrast signal. Per case the liver's level is 1 in ``T2WI, DWI, In Phase,
C-pre``, ``1 - steatosis`` in ``Out Phase`` (a fatty liver, a quarter of the cases, loses ``U(0.2, 0.45)``), and
``1 + e_L`` in the dynamic phases with ``e_L = (U(0.15, 0.35), U(0.7, 1.0), U(0.5, 0.8))`` (C+A, C+V, C+Delay). A
compartment is ``(t2, dwi, t1, e_A, e_V, e_D, fat)``: its signal is ``t2`` and ``dwi`` in T2WI and DWI (relative to
the liver), ``t1`` in In Phase and C-pre, ``t1 (1 - fat)`` in Out Phase and ``t1 + e`` in the dynamic phases
(absolute enhancement, so "no enhancement" is a constant signal from C-pre to C+Delay). The arterial phase is timed
late by ``tau ~ U(0, 0.3)`` per case: every compartment's arterial enhancement becomes ``(1 - tau) e_A + tau e_V``.
Every number below is drawn uniformly per case from the range given.

====  ======================  =======================================================================================
k     type                    compartments and their features (``d``: depth, 0 at the lesion's edge, 1 at its centre)
====  ======================  =======================================================================================
0     hemangioma              T2 very bright (2.6-3.6), DWI 1.2-1.6 (shine-through), T1 0.55-0.75; 3-6 peripheral
                              nodules enhance like blood (``e_A`` 1.4-2.0) in C+A, the enhancement fills in
                              centripetally: ``d < 0.35-0.65`` in C+V, ``d < 0.8-1`` in C+Delay (small lesions
                              flash-fill in C+A with probability 0.3)
1     cholangiocarcinoma      rim (``d < 0.3-0.45``): T2 1.3-1.7, DWI 1.7-2.3, arterial rim enhancement; core: T2
                              1.05-1.3 (fibrous), progressive enhancement, above the liver in C+Delay
2     abscess                 cavity: T2 2.4-3.4, DWI 2.5-3.5 (restricted pus), no enhancement; wall (``d < 0.2-0.35``)
                              enhancing from C+A on and persisting; the liver within 2-4 voxels hyperenhances in C+A
                              (+0.35-0.6) and is oedematous in T2
3     metastasis              rim / target: rim DWI 1.8-2.4, arterial ring, peripheral wash-out (below the liver in
                              C+Delay); core T2 1.4-2.2 (necrosis), hypoenhancing in every dynamic phase
4     cyst                    T2 very bright (3.4-4.6), DWI 0.8-1.2 (no restriction), T1 0.3-0.45, no enhancement;
                              round and smooth
5     FNH                     T2, DWI and T1 near the liver; arterial enhancement (+0.4-0.9 over the liver), iso in C+V
                              and C+Delay; central stellate scar (probability 0.75 when the lesion is deep enough): T2
                              2.0-3.0, not arterially enhancing, above the liver in C+Delay
6     HCC                     T2 1.2-1.6, DWI 1.5-2.1; arterial wash-in (+0.5-1.0 over the liver), wash-out in C+V
                              (-0.15-0.45) and C+Delay (-0.3-0.6); an enhancing capsule in C+V/C+Delay (probability
                              0.7, one voxel, when deep enough); intracellular fat (probability 0.35) drops the Out
                              Phase signal by 30-50 %
====  ======================  =======================================================================================

**Anatomy and nuisances.** An abdomen (an elliptic cylinder of other tissue) holds an irregular liver (an ellipsoid,
radii 0.28-0.36 of the image, its surface perturbed by a smooth random field); one lesion lies in the liver, of
``V ~ log U(20 voxels, V_liver / 3)`` voxels, non-spherical (an ellipsoid of axis ratios 0.75-1.3 whose radius is
modulated by a smooth field, lobulation 0.1-0.35; cysts 0.05) and cut to the liver. Parenchyma and lesion carry a
smooth texture (4 % and 6 %). Each phase is blurred (``sigma = 0.6`` voxels, partial volume), multiplied by a smooth
bias field of its own (a random linear and quadratic gradient of up to ``bias`` = 15 %) and a global scale
``exp(N(0, scale_sd))`` (``scale_sd`` 0.3, per case and phase), and gets Gaussian noise of ``noise`` (5 %) of the
liver's level (DWI twice that). ``misregistration_voxels = n`` shifts every phase but the reference (``C+A``, on
which the label is drawn, as the LLD-MMRI import aligns to it) by random integers in ``[-n, n]`` per axis.

**Labels.** 0 background, 1 liver, 2 lesion. With ``box_labels`` (default) the lesion label is its filled bounding
box, each face moved outward by ``U{0..box_jitter}`` voxels (an annotator's loose box; the box always covers the
lesion); the jitter has a random stream of its own, so one seed gives the same images for every ``box_jitter``.

**Class priors.** :data:`DEFAULT_PRIORS` (HCC 0.32; the others are this module's assumption, not a published count:
the LLD-MMRI 2023 release (316 training, 78 validation, 104 test patients) publishes no per-class counts that we could
find). Splits get ``round(n * prior)`` cases per class by :func:`nnunet_mvext.synthetic.multiphase.assign_classes`.

``cases.json`` holds each case's ground truth: class, lesion and liver voxels, lesion centre, per-phase scale, shift
and liver level, the compartments' signals per phase before the nuisances, and which optional features it has.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.lld_mmri.annotation import CLASS_NAMES, PHASES
from nnunet_mvext.synthetic.dataset_folder import SyntheticDataset, new_dataset_folder, write_dataset_files, write_image
from nnunet_mvext.synthetic.multiphase import assign_classes

logger = logging.getLogger(__name__)

#: assumed class frequencies in CLASS_NAMES order (HCC about a third, as in the challenge; the rest assumed)
DEFAULT_PRIORS = (0.14, 0.10, 0.08, 0.12, 0.14, 0.10, 0.32)
REFERENCE_PHASE = PHASES.index("C+A")
T2, DWI, IN, OUT, PRE, ART, VEN, DEL = range(8)
DYNAMIC = (ART, VEN, DEL)
MIN_LESION_VOXELS = 20
LABELS = {"background": 0, "liver": 1, "lesion": 2}


@dataclass(frozen=True)
class Nuisance:
    """What varies besides the class (set to 0 / False for a clean case, as the tests do)."""

    misregistration_voxels: int = 0
    scale_sd: float = 0.3
    bias: float = 0.15
    noise: float = 0.05
    blur: float = 0.6
    steatosis: bool = True
    arterial_timing: bool = True


@dataclass(frozen=True)
class LesionTypeCase:
    """The ground truth behind one generated case (per-phase lists in PHASES order)."""

    case_id: str
    label: int
    class_name: str
    lesion_voxels: int
    liver_voxels: int
    centre: tuple
    scale: tuple
    shift: tuple
    liver_level: tuple
    compartments: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)


def _smooth_field(shape: tuple, rng: np.random.Generator, cells: int = 6) -> np.ndarray:
    """A smooth random field of about unit spread: normal noise on a ``cells``^3 grid, trilinearly upsampled."""
    coarse = rng.normal(size=(cells,) * len(shape))
    out = ndimage.zoom(coarse, [s / cells for s in shape], order=1, mode="nearest")
    return out[tuple(slice(0, s) for s in shape)]


def _grid(shape: tuple) -> np.ndarray:
    """``(3, *shape)`` voxel coordinates."""
    return np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))


def _anatomy(shape: tuple, rng: np.random.Generator, lobulation_range: tuple):
    """Body and liver masks, the lesion mask, its centre and equivalent radius."""
    grid = _grid(shape)
    size = np.array(shape, dtype=np.float32)
    centre_body = size / 2
    body = (((grid[1] - centre_body[1]) / (0.48 * size[1])) ** 2
            + ((grid[2] - centre_body[2]) / (0.47 * size[2])) ** 2) <= 1
    liver_centre = size / 2 + rng.uniform(-0.06, 0.06, 3) * size
    liver_radii = rng.uniform(0.28, 0.36, 3) * size
    ellipsoid = np.sqrt((((grid - liver_centre[:, None, None, None]) / liver_radii[:, None, None, None]) ** 2).sum(0))
    liver = (ellipsoid * (1 + 0.12 * _smooth_field(shape, rng, 5)) <= 1) & body
    liver_voxels = int(liver.sum())

    lesion_volume = math.exp(rng.uniform(math.log(MIN_LESION_VOXELS), math.log(max(liver_voxels / 3, 40))))
    radius = (3 * lesion_volume / (4 * math.pi)) ** (1 / 3)
    axes = radius * rng.uniform(0.75, 1.3, 3)
    axes *= radius / np.prod(axes) ** (1 / 3)
    lobulation = rng.uniform(*lobulation_range)
    for _ in range(20):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        room = max(0.0, 1 - 1.05 * radius / liver_radii.min())
        centre = liver_centre + direction * liver_radii * room * rng.uniform() ** (1 / 3)
        half = int(math.ceil(axes.max() * (1 + 2 * lobulation) + 2))
        lo = np.maximum(np.floor(centre).astype(int) - half, 0)
        hi = np.minimum(np.floor(centre).astype(int) + half + 1, np.array(shape))
        crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        local = grid[(slice(None),) + crop] - centre[:, None, None, None]
        distance = np.sqrt(((local / axes[:, None, None, None]) ** 2).sum(0))
        wobble = 1 + lobulation * np.clip(_smooth_field(distance.shape, rng, 4), -2, 2)
        lesion = np.zeros(shape, dtype=bool)
        lesion[crop] = (distance <= wobble) & liver[crop]
        if lesion.sum() >= MIN_LESION_VOXELS:
            break
    else:  # the liver is too small for the drawn lesion: a small ball at the liver's centre
        lesion = (((grid - liver_centre[:, None, None, None]) ** 2).sum(0) <= 2.5 ** 2) & liver
    return body, liver, lesion, liver_voxels


def _depth(lesion: np.ndarray) -> tuple[np.ndarray, float]:
    """Normalised depth in the lesion and the largest Euclidean distance transform (edt, voxels): depth is
    ``(edt - 1) / (max edt - 1)``, 0 on the lesion's edge voxels, 1 at its deepest (0 everywhere for a lesion one voxel
    thick), NaN outside; edt is the distance to the nearest voxel outside the lesion."""
    edt = ndimage.distance_transform_edt(np.pad(lesion, 1))[1:-1, 1:-1, 1:-1]
    top = float(edt.max())
    depth = np.full(lesion.shape, np.nan, dtype=np.float32)
    depth[lesion] = (edt[lesion] - 1) / (top - 1) if top > 1 else 0.0
    return depth, top


class _Paint:
    """Per-phase signal maps: compartments painted in order; a NaN in a compartment's vector leaves that phase."""

    def __init__(self, shape: tuple):
        self.maps = np.zeros((len(PHASES), *shape), dtype=np.float32)
        self.record: dict = {}

    def add(self, name: str, mask: np.ndarray, vector: np.ndarray) -> None:
        if not mask.any():
            return
        for p, value in enumerate(vector):
            if not np.isnan(value):
                self.maps[p][mask] = value
        self.record[name] = [None if np.isnan(v) else round(float(v), 4) for v in vector]


def _only(phases: Sequence[int], vector: np.ndarray) -> np.ndarray:
    """``vector`` with every phase outside ``phases`` set to NaN (left as painted before)."""
    out = np.full(len(PHASES), np.nan)
    out[list(phases)] = vector[list(phases)]
    return out


class _Tissue:
    """Builds compartment vectors for one case (liver enhancement and arterial timing shared)."""

    def __init__(self, liver_enhancement: np.ndarray, tau: float):
        self.e_liver = liver_enhancement
        self.tau = tau

    def vector(self, t2: float, dwi: float, t1: float, e_a: float, e_v: float, e_d: float, fat: float = 0.0
               ) -> np.ndarray:
        """``(8,)`` signals in PHASES order (module docstring)."""
        e_a = (1 - self.tau) * e_a + self.tau * e_v
        return np.array([t2, dwi, t1, t1 * (1 - fat), t1, t1 + e_a, t1 + e_v, t1 + e_d])

    def liver(self, steatosis: float) -> np.ndarray:
        return self.vector(1.0, 1.0, 1.0, *self.e_liver, fat=steatosis)


def _ring(lesion: np.ndarray, liver: np.ndarray, width: float) -> np.ndarray:
    """Liver voxels within ``width`` voxels outside the lesion."""
    outside = ndimage.distance_transform_edt(~lesion)
    return (outside > 0) & (outside <= width) & liver


def _nodules(lesion: np.ndarray, depth: np.ndarray, rng: np.random.Generator, radius: float) -> np.ndarray:
    """3-6 blobs of radius ``max(1.2, 0.3 R)`` around random edge voxels of the lesion."""
    edge = np.argwhere(lesion & (depth <= 0.15))
    picks = edge[rng.choice(len(edge), size=min(len(edge), int(rng.integers(3, 7))), replace=False)]
    seeds = np.zeros(lesion.shape, dtype=bool)
    seeds[tuple(picks.T)] = True
    return (ndimage.distance_transform_edt(~seeds) <= max(1.2, 0.3 * radius)) & lesion


def _scar(lesion: np.ndarray, depth: np.ndarray, centre: np.ndarray, rng: np.random.Generator,
          radius: float) -> np.ndarray:
    """A central blob (``d > 0.65-0.8``) and 3-5 thin spokes from the centre towards the edge."""
    scar = lesion & (depth > rng.uniform(0.65, 0.8))
    points = np.argwhere(lesion).astype(np.float32)
    for _ in range(int(rng.integers(3, 6))):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        along = np.clip((points - centre) @ direction, 0, 0.85 * radius)
        near = np.linalg.norm(points - centre - along[:, None] * direction, axis=1) <= 0.6
        scar[tuple(points[near].astype(int).T)] = True
    return scar


def _paint_lesion(paint: _Paint, label: int, lesion: np.ndarray, liver: np.ndarray, tissue: _Tissue,
                  rng: np.random.Generator) -> dict:
    """Paint class ``label``'s compartments into ``paint``; returns the optional features it drew."""
    u = rng.uniform
    depth, max_edt = _depth(lesion)
    radius = (3 * lesion.sum() / (4 * math.pi)) ** (1 / 3)
    centre = np.argwhere(lesion & (depth >= np.nanmax(depth))).mean(0)
    e_liver = tissue.e_liver
    features: dict = {}
    name = CLASS_NAMES[label]
    if label == 0:  # hemangioma: nodular peripheral enhancement filling in centripetally
        t2, dwi, t1 = u(2.6, 3.6), u(1.2, 1.6), u(0.55, 0.75)
        paint.add(name, lesion, tissue.vector(t2, dwi, t1, 0.05, 0.1, 0.15))
        blood = tissue.vector(t2, dwi, t1, u(1.4, 2.0), u(1.1, 1.5), u(0.9, 1.3))
        flash = radius < 2.5 and rng.random() < 0.3
        nodules = lesion if flash else _nodules(lesion, depth, rng, radius)
        fill_v, fill_d = u(0.35, 0.65), u(0.8, 1.01)
        paint.add("filled_delayed", lesion & (depth < fill_d), _only([DEL], blood))
        paint.add("filled_venous", (lesion & (depth < fill_v)) | nodules, _only([VEN], blood))
        paint.add("nodules", nodules, _only([ART], blood))
        features.update(flash_filling=bool(flash), fill_venous=fill_v, fill_delayed=fill_d)
    elif label == 1:  # intrahepatic cholangiocarcinoma: arterial rim, progressive delayed central enhancement
        t1 = u(0.65, 0.8)
        paint.add("rim", lesion, tissue.vector(u(1.3, 1.7), u(1.7, 2.3), t1, u(0.6, 1.0), u(0.7, 0.9), u(0.5, 0.8)))
        core = lesion & (depth >= u(0.3, 0.45))
        paint.add("core", core, tissue.vector(u(1.05, 1.3), u(1.2, 1.5), t1, u(0.05, 0.25), u(0.4, 0.7),
                                              1 + e_liver[2] - t1 + u(0.25, 0.6)))
    elif label == 2:  # abscess: enhancing wall, restricted non-enhancing cavity, perilesional arterial hyperaemia
        ring = _ring(lesion, liver, u(2, 4))
        perilesional = tissue.liver(0.0)
        perilesional[T2] *= u(1.1, 1.25)
        perilesional[ART] += u(0.35, 0.6)
        paint.add("perilesional_liver", ring, _only([T2, ART], perilesional))
        paint.add("wall", lesion, tissue.vector(u(1.2, 1.5), u(1.3, 1.7), u(0.75, 0.9), u(0.7, 1.1), u(0.9, 1.2),
                                                u(0.9, 1.2)))
        paint.add("cavity", lesion & (depth >= u(0.2, 0.35)), tissue.vector(u(2.4, 3.4), u(2.5, 3.5), u(0.4, 0.6),
                                                                            0.0, 0.0, 0.05))
    elif label == 3:  # metastasis: target / rim enhancement with peripheral wash-out, necrotic core
        t1 = u(0.65, 0.8)
        paint.add("rim", lesion, tissue.vector(u(1.3, 1.7), u(1.8, 2.4), t1, u(0.6, 1.0), u(0.6, 0.9),
                                               1 + e_liver[2] - t1 - u(0.3, 0.55)))
        paint.add("core", lesion & (depth >= u(0.25, 0.45)),
                  tissue.vector(u(1.4, 2.2), u(1.3, 1.7), u(0.6, 0.75), u(0.0, 0.2), u(0.2, 0.4), u(0.25, 0.45)))
    elif label == 4:  # cyst: fluid, no enhancement, no restriction
        paint.add(name, lesion, tissue.vector(u(3.4, 4.6), u(0.8, 1.2), u(0.3, 0.45), 0.0, 0.0, 0.0))
    elif label == 5:  # focal nodular hyperplasia: arterial enhancement, iso later, T2-bright late-enhancing scar
        t1 = u(0.9, 1.05)
        paint.add(name, lesion, tissue.vector(u(1.0, 1.2), u(1.0, 1.25), t1, e_liver[0] + 1 - t1 + u(0.4, 0.9),
                                              e_liver[1] + 1 - t1 + u(-0.06, 0.06),
                                              e_liver[2] + 1 - t1 + u(-0.06, 0.06)))
        has_scar = max_edt >= 3 and rng.random() < 0.75
        if has_scar:
            t1_scar = u(0.5, 0.7)
            paint.add("scar", _scar(lesion, depth, centre, rng, radius),
                      tissue.vector(u(2.0, 3.0), u(1.0, 1.3), t1_scar, u(0.0, 0.15), u(0.4, 0.7),
                                    e_liver[2] + 1 - t1_scar + u(0.25, 0.5)))
        features["scar"] = bool(has_scar)
    else:  # hepatocellular carcinoma: wash-in, wash-out, enhancing capsule, sometimes fat
        t1 = u(0.75, 1.05)
        fat = u(0.3, 0.5) if rng.random() < 0.35 else 0.0
        paint.add(name, lesion, tissue.vector(u(1.2, 1.6), u(1.5, 2.1), t1, e_liver[0] + 1 - t1 + u(0.5, 1.0),
                                              e_liver[1] + 1 - t1 - u(0.15, 0.45),
                                              e_liver[2] + 1 - t1 - u(0.3, 0.6), fat=fat))
        has_capsule = max_edt >= 2.5 and rng.random() < 0.7
        if has_capsule:  # one voxel of the lesion's edge: hypointense in T2, enhancing from C+V on
            capsule = np.full(len(PHASES), np.nan)
            capsule[T2] = u(0.7, 1.0)
            capsule[VEN] = 1 + e_liver[1] + u(0.0, 0.3)
            capsule[DEL] = 1 + e_liver[2] + u(0.25, 0.5)
            paint.add("capsule", lesion & (depth <= 1e-6), capsule)
        features.update(fat=round(fat, 4), capsule=bool(has_capsule))
    return features


def _bias(grid_unit: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field ``1 + s (g . x + q (h . x)^2)`` with random unit directions g, h,
    ``s ~ U(0, strength)``, ``q ~ U(-1, 1)``, x the coordinates scaled to [-1, 1]."""
    if strength <= 0:
        return np.ones(grid_unit.shape[1:], dtype=np.float32)
    g, h = rng.normal(size=(2, 3))
    g /= np.linalg.norm(g)
    h /= np.linalg.norm(h)
    along_g = np.tensordot(g, grid_unit, axes=1)
    along_h = np.tensordot(h, grid_unit, axes=1)
    field_ = along_g + rng.uniform(-1, 1) * along_h ** 2
    return (1 + rng.uniform(0, strength) * field_ / max(float(np.abs(field_).max()), 1e-6)).astype(np.float32)


def make_case(shape: Sequence[int], label: int, rng: np.random.Generator, nuisance: Nuisance = Nuisance()
              ) -> tuple[np.ndarray, np.ndarray, dict]:
    """One case of class ``label``: images ``(8, *shape)`` float32 (PHASES order), the segmentation drawn on the
    reference phase (``shape`` uint8: 0 background, 1 liver, 2 lesion, voxel labels) and the ground truth (dict of
    :class:`LesionTypeCase`'s fields after ``class_name``)."""
    shape = tuple(int(s) for s in shape)
    body, liver, lesion, liver_voxels = _anatomy(shape, rng, (0.05, 0.1) if label == 4 else (0.1, 0.35))
    e_liver = np.array([rng.uniform(0.15, 0.35), rng.uniform(0.7, 1.0), rng.uniform(0.5, 0.8)])
    tau = rng.uniform(0, 0.3) if nuisance.arterial_timing else 0.0
    steatosis = rng.uniform(0.2, 0.45) if nuisance.steatosis and rng.random() < 0.25 else 0.0
    tissue = _Tissue(e_liver, tau)
    paint = _Paint(shape)
    other = np.array([rng.uniform(0.6, 0.9), rng.uniform(0.3, 0.6), rng.uniform(0.8, 1.3), rng.uniform(0.4, 0.8),
                      *[rng.uniform(0.8, 1.3)] * 2, rng.uniform(1.0, 1.5), rng.uniform(1.0, 1.4)])
    paint.add("abdomen", body & ~liver, other)
    liver_level = tissue.liver(steatosis)
    paint.add("liver", liver, liver_level)
    features = _paint_lesion(paint, label, lesion, liver, tissue, rng)
    texture = 1 + 0.04 * np.clip(_smooth_field(shape, rng, 8), -3, 3) + 0.02 * lesion * np.clip(
        _smooth_field(shape, rng, 12), -3, 3)

    grid_unit = _grid(shape) / (np.array(shape, dtype=np.float32)[:, None, None, None] - 1) * 2 - 1
    scale = np.exp(rng.normal(0, nuisance.scale_sd, len(PHASES))) if nuisance.scale_sd > 0 else np.ones(len(PHASES))
    shifts = np.zeros((len(PHASES), 3), dtype=int)
    if nuisance.misregistration_voxels > 0:
        n = nuisance.misregistration_voxels
        shifts = rng.integers(-n, n + 1, size=(len(PHASES), 3))
        shifts[REFERENCE_PHASE] = 0
    images = np.empty((len(PHASES), *shape), dtype=np.float32)
    for p in range(len(PHASES)):
        img = paint.maps[p] * texture
        if nuisance.blur > 0:
            img = ndimage.gaussian_filter(img, nuisance.blur)
        img = img * _bias(grid_unit, nuisance.bias, rng)
        if nuisance.noise > 0:
            img = img + rng.normal(0, nuisance.noise * liver_level[p] * (2 if p == DWI else 1), shape)
        if shifts[p].any():
            img = np.roll(img, tuple(int(s) for s in shifts[p]), axis=(0, 1, 2))
        images[p] = scale[p] * img
    seg = np.zeros(shape, dtype=np.uint8)
    seg[liver] = LABELS["liver"]
    seg[lesion] = LABELS["lesion"]
    truth = {"lesion_voxels": int(lesion.sum()), "liver_voxels": liver_voxels,
             "centre": tuple(round(float(v), 2) for v in np.argwhere(lesion).mean(0)),
             "scale": tuple(round(float(v), 5) for v in scale),
             "shift": tuple(tuple(int(v) for v in s) for s in shifts),
             "liver_level": tuple(round(float(v), 4) for v in liver_level), "compartments": paint.record,
             "features": {"arterial_timing": round(float(tau), 4), "steatosis": round(float(steatosis), 4),
                          **features}}
    return images, seg, truth


def jittered_box(seg: np.ndarray, rng: np.random.Generator, jitter: int, lesion_label: int = LABELS["lesion"]
                 ) -> np.ndarray:
    """``seg`` with the lesion label replaced by its filled bounding box, each face moved outward by ``U{0..jitter}``
    voxels (clipped to the image): a loose annotator's box that always covers the lesion."""
    out = seg.copy()
    where = np.nonzero(seg == lesion_label)
    if not where[0].size:
        return out
    lo = [max(0, int(w.min()) - int(rng.integers(0, jitter + 1))) for w in where]
    hi = [min(s, int(w.max()) + 1 + int(rng.integers(0, jitter + 1))) for w, s in zip(where, seg.shape)]
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = lesion_label
    return out


def _priors(class_priors: Optional[Sequence[float]]) -> np.ndarray:
    values = DEFAULT_PRIORS if class_priors is None else class_priors
    try:
        priors = np.array([float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        raise MVExtError(f"class_priors {list(values)}: every prior must be a number.") from None
    if priors.shape != (len(CLASS_NAMES),):
        raise MVExtError(f"class_priors has {priors.size} values; the lesion types are {len(CLASS_NAMES)} "
                         f"({', '.join(CLASS_NAMES)}), give one per type.")
    if not np.all(np.isfinite(priors)) or np.any(priors <= 0):
        raise MVExtError(f"class_priors {priors.tolist()}: every prior must be a positive number (they are "
                         f"normalised to sum 1).")
    return priors / priors.sum()


def generate_lesion_types_dataset(raw_folder: str, dataset_id: int = 513, dataset_name: str = "MVExtLesionTypes",
                                  num_train: int = 96, num_test: int = 200, shape: Sequence[int] = (48, 48, 48),
                                  spacing: Sequence[float] = (1.0, 1.0, 1.0), seed: int = 0,
                                  misregistration_voxels: int = 2, *, class_priors: Optional[Sequence[float]] = None,
                                  box_labels: bool = True, box_jitter: int = 2,
                                  nuisance: Optional[Nuisance] = None) -> SyntheticDataset:
    """Write ``Dataset{id:03d}_{name}`` into ``raw_folder`` in nnU-Net's raw layout (``imagesTr``, ``labelsTr``,
    ``imagesTs``, ``labelsTs``, ``dataset.json`` with the ``classification`` block, the held-out classes in
    ``labelsTs/classification.csv``, the ground truth in ``cases.json``), as
    :func:`nnunet_mvext.synthetic.multiphase.generate_multiphase_dataset` does, and return where it lies.

    Case ``i`` draws from its own random stream ``(seed, i)`` (the class assignment and the box jitter from streams of
    their own), so a case does not depend on the split sizes before it. ``nuisance`` overrides the default nuisances
    (``misregistration_voxels`` then comes from it). Refuses to write into an existing dataset folder.
    """
    if not 1 <= dataset_id <= 999:
        raise MVExtError(f"dataset_id must be in 1..999, got {dataset_id}.")
    if num_train < 5:
        raise MVExtError(f"num_train must be >= 5 for nnU-Net's 5-fold split, got {num_train}.")
    if num_train < len(CLASS_NAMES):
        raise MVExtError(f"num_train {num_train} < {len(CLASS_NAMES)} lesion types: every type needs a training case.")
    if num_test < 0:
        raise MVExtError(f"num_test must be >= 0, got {num_test}.")
    if misregistration_voxels < 0 or box_jitter < 0:
        raise MVExtError(f"misregistration_voxels and box_jitter must be >= 0, got {misregistration_voxels} and "
                         f"{box_jitter}.")
    if len(shape) != 3 or min(int(s) for s in shape) < 16:
        raise MVExtError(f"shape {list(shape)}: give three sizes of at least 16 voxels.")
    priors = _priors(class_priors)
    if nuisance is None:
        nuisance = Nuisance(misregistration_voxels=misregistration_voxels)
    full_name, folder = new_dataset_folder(raw_folder, dataset_id, dataset_name)

    label_rng = np.random.default_rng([seed, 513, 0])
    split_labels = {"Tr": assign_classes(num_train, priors, label_rng),
                    "Ts": assign_classes(num_test, priors, label_rng)}
    cases: dict = {"Tr": [], "Ts": []}
    for split, count, start in (("Tr", num_train, 0), ("Ts", num_test, num_train)):
        for i in range(count):
            index = start + i
            case_id = f"case_{index:03d}"
            label = split_labels[split][i]
            images, seg, truth = make_case(shape, label, np.random.default_rng([seed, 513, 1, index]), nuisance)
            if box_labels:
                seg = jittered_box(seg, np.random.default_rng([seed, 513, 2, index]), box_jitter)
            for p in range(len(PHASES)):
                write_image(images[p], os.path.join(folder, f"images{split}", f"{case_id}_{p:04d}.nii.gz"), spacing)
            write_image(seg, os.path.join(folder, f"labels{split}", f"{case_id}.nii.gz"), spacing)
            cases[split].append(LesionTypeCase(case_id, label, CLASS_NAMES[label], **truth))
        logger.info("wrote %d %s cases to %s", count, "training" if split == "Tr" else "held-out", folder)
    for split in ("Tr", "Ts"):
        counts = np.bincount([c.label for c in cases[split]], minlength=len(CLASS_NAMES))
        logger.info("%s cases per type: %s", "training" if split == "Tr" else "held-out",
                    ", ".join(f"{n} {c}" for n, c in zip(CLASS_NAMES, counts)))
        missing = [n for n, c in zip(CLASS_NAMES, counts) if c == 0]
        if split == "Ts" and num_test and missing:
            logger.warning("the held-out set (%d cases) has no case of %s; give num_test >= %d for one of each.",
                           num_test, ", ".join(missing), len(CLASS_NAMES))

    description = ("Synthetic LLD-MMRI-like multi-phase liver MRI (seven lesion types by their textbook features) "
                   "generated by nnunet_mvext.synthetic.lesion_types")
    if box_labels:
        description += f"; the lesion label is its bounding box, each face moved outward by up to {box_jitter} voxels"
    dataset_json = {
        "channel_names": {str(i): name for i, name in enumerate(PHASES)},
        "labels": dict(LABELS),
        "numTraining": num_train,
        "file_ending": ".nii.gz",
        "name": full_name,
        "description": description,
        "classification": {"class_names": {str(k): n for k, n in enumerate(CLASS_NAMES)},
                           "labels": {c.case_id: c.label for c in cases["Tr"]}},
    }
    write_dataset_files(folder, dataset_json, cases)
    return SyntheticDataset(full_name, folder, tuple(cases["Tr"]), tuple(cases["Ts"]), tuple(PHASES),
                            tuple(CLASS_NAMES), box_labels)
