"""nnunet_mvext: an nnU-Net v2 plugin.

Importing this package must stay cheap (no imports at all here): the ``.pth`` hook installed with it imports
:mod:`nnunet_mvext._startup_hook` at every interpreter start (tests/test_entry_point_bridge.py checks it).
"""

__version__ = "0.2.0"
