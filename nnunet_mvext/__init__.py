"""nnunet_mvext: an nnU-Net v2 plugin.

Importing this package is cheap on purpose (no torch, no nnU-Net): the ``.pth`` hook installed with it imports
:mod:`nnunet_mvext.entry_point_bridge` at every interpreter start.
"""

__version__ = "0.1.0"
