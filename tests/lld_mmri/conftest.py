"""Mock releases and their imports, shared by the LLD-MMRI tests: a 6-patient release with every defect, and a
2-patient one without defects for the tests that only need some valid release."""

import logging

import pytest

from nnunet_mvext.lld_mmri.import_release import import_release
from nnunet_mvext.lld_mmri.mock_release import generate_mock_release


class _Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="session")
def mock(tmp_path_factory):
    return generate_mock_release(str(tmp_path_factory.mktemp("lld") / "release"), 6, seed=4)


@pytest.fixture(scope="session")
def small_mock(tmp_path_factory):
    return generate_mock_release(str(tmp_path_factory.mktemp("lld_small") / "release"), 2, seed=5,
                                 unreleased_fraction=0, multi_lesion_fraction=0, defects=False)


@pytest.fixture(scope="session")
def crop_import_logged(mock, tmp_path_factory):
    """The crop import of ``mock`` and the warnings it logged."""
    raw = str(tmp_path_factory.mktemp("raw_crop"))
    handler = _Messages()
    logger = logging.getLogger("nnunet_mvext")
    logger.addHandler(handler)
    try:
        result = import_release(mock.folder, 991, raw_folder=raw, alignment="crop")
    finally:
        logger.removeHandler(handler)
    return result, handler.messages


@pytest.fixture(scope="session")
def crop_import(crop_import_logged):
    return crop_import_logged[0]


@pytest.fixture(scope="session")
def resample_import(mock, tmp_path_factory):
    raw = str(tmp_path_factory.mktemp("raw_resample"))
    return import_release(mock.folder, 992, raw_folder=raw, alignment="resample")
