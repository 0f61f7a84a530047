"""The seed's MBTFE + EAB layout, for the benchmark only (not shipped in the package).

It is ``MBTFEUNet`` with the seed's choices switched back on: MBTFE after every encoder stage with four independent
branches (1x1; 3x3; two 3x3; three 3x3 = 7 convs per stage), no residual, EAB attending and gating at full
resolution with an extra 1x1 projection of the upsampled aggregate. The seed's outright bugs (hardcoded channels and
factors, BatchNorm with batch size 2, the linear FC pair, the leaked kernel-size variable) are not reproduced: the
reference uses the plan's ops like every other model in the benchmark, so it measures the seed's *cost*.
"""

from nnunet_mvext.architectures.mbtfe_knobs import SEED_KNOBS
from nnunet_mvext.architectures.mbtfe_unet import MBTFEUNet


def seed_reference_unet(**plan_kwargs) -> MBTFEUNet:
    """The seed layout on the given plan (``PlainConvUNet`` keyword arguments)."""
    return MBTFEUNet(**plan_kwargs, **SEED_KNOBS)
