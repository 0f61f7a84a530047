"""Deprecated import path, removed in 0.3.0: ``nnunet_mvext.synthetic_dataset`` moved in 0.2.0 to
:mod:`nnunet_mvext.synthetic.multiphase`, :mod:`nnunet_mvext.synthetic.dataset_folder`."""

from nnunet_mvext._moved_modules import reexport

reexport(__name__, globals())
