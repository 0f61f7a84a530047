"""LLD-MMRI 2023 (liver lesions, 7 classes, 8 MRI phases, lesion boxes) end to end.

- :mod:`~nnunet_mvext.lld_mmri.annotation`: the release's ``labels/Annotation.json``, read and validated, and the
  challenge's box convention.
- :mod:`~nnunet_mvext.lld_mmri.alignment`: the two ways of putting the eight phases of a case on one grid.
- :mod:`~nnunet_mvext.lld_mmri.import_release`: ``nnunet-mvext import-lld``, the release as an nnU-Net dataset.
- :mod:`~nnunet_mvext.lld_mmri.mock_release`: ``nnunet-mvext make-lld-mock``, a synthetic release in the official
  layout for tests and the README walkthrough.
- :mod:`~nnunet_mvext.lld_mmri.submission`: ``nnunet-mvext export-lld``, the challenge's submission file.
"""
