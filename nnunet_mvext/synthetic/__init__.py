"""Synthetic datasets in nnU-Net's raw format, generated with their ground truth (``nnunet-mvext make-dataset``, the
demo, the tests and the benchmarks).

- :mod:`~nnunet_mvext.synthetic.multiphase`: multi-phase contrast MRI whose case class is an enhancement curve over
  the phases (binary washout vs persistent, or up to 7 abstract patterns); the demo's data.
- :mod:`~nnunet_mvext.synthetic.lesion_types`: the seven LLD-MMRI lesion types by their imaging features over its
  eight series, designed independently of the first generator.
- :mod:`~nnunet_mvext.synthetic.shapes`: one channel, a lesion with a spike along one axis (the multi-view trainers'
  data).
- :mod:`~nnunet_mvext.synthetic.dataset_folder`: the dataset folder and files all three write.

The LLD-MMRI mock release (``nnunet-mvext make-lld-mock``) is not here but in
:mod:`nnunet_mvext.lld_mmri.mock_release`: it mimics that one release's layout and quirks (``Annotation.json``, the
official crops and folds, the headers without geometry), is read back by that capability's importers and is tested
with them; it takes its intensities from :mod:`~nnunet_mvext.synthetic.multiphase`.
"""
