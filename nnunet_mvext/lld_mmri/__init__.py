"""LLD-MMRI 2023 (liver lesions, 7 classes, 8 MRI phases, lesion boxes) end to end.

- :mod:`~nnunet_mvext.lld_mmri.annotation`: the release's ``labels/Annotation.json``, read and validated, and the
  challenge's box convention.
- :mod:`~nnunet_mvext.lld_mmri.geometry`: a series' spacing and origin from ``Annotation.json`` (the release's
  headers hold none), and the flip fix.
- :mod:`~nnunet_mvext.lld_mmri.release_checks`: what the import reports: series far from the other phases, repeated
  slices, phases placed outside their series.
- :mod:`~nnunet_mvext.lld_mmri.alignment`: the two ways of putting the eight phases of a case on one grid.
- :mod:`~nnunet_mvext.lld_mmri.import_release`: ``nnunet-mvext import-lld``, the release as an nnU-Net dataset.
- :mod:`~nnunet_mvext.lld_mmri.import_crops`: ``import-lld --from-crops``, the official lesion crops
  (``classification_dataset/``) as the same dataset.
- :mod:`~nnunet_mvext.lld_mmri.official_crops`, :mod:`~nnunet_mvext.lld_mmri.official_folds`: the challenge's crop
  and fold scripts (written by the mock, read by the imports: the folds become nnU-Net's ``splits_final.json``).
- :mod:`~nnunet_mvext.lld_mmri.mock_release`: ``nnunet-mvext make-lld-mock``, a synthetic release with the real
  release's quirks, for tests and docs/how_to/lld_mmri.md.
- :mod:`~nnunet_mvext.lld_mmri.submission`: ``nnunet-mvext export-lld``, the challenge's submission file.
"""
