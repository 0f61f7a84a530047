import json
import os
from pathlib import Path

import numpy as np
import pytest

from nnunet_mvext.classification.case_labels import require_labels, set_classes
from nnunet_mvext.classification.metrics import classification_metrics
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.synthetic.multiphase import generate_multiphase_dataset


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    for var, path in (("nnUNet_raw", raw), ("nnUNet_preprocessed", pre), ("nnUNet_results", tmp_path / "res")):
        monkeypatch.setenv(var, str(path))
    ds = generate_multiphase_dataset(str(raw), dataset_id=321, num_train=5, num_test=1, shape=(16, 16, 16))
    os.makedirs(pre / ds.dataset_name)
    with open(os.path.join(ds.folder, "dataset.json")) as f:
        meta = json.load(f)
    del meta["classification"]
    for folder in (ds.folder, str(pre / ds.dataset_name)):
        with open(os.path.join(folder, "dataset.json"), "w") as f:
            json.dump(meta, f)
    return ds, tmp_path


def _csv(tmp_path, rows, header="case_id,class"):
    path = tmp_path / "labels.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return str(path)


def test_set_classes_writes_raw_and_preprocessed_dataset_json(dataset):
    ds, tmp = dataset
    rows = [f"case_{i:03d},{i % 2}" for i in range(5)]
    written = set_classes("321", _csv(tmp, rows), ["low_grade", "high_grade"])
    assert len(written) == 2
    for path in written:
        block = json.loads(Path(path).read_text())["classification"]
        assert block["class_names"] == {"0": "low_grade", "1": "high_grade"}
        assert block["labels"]["case_003"] == 1


@pytest.mark.parametrize("rows,names,message", [
    (["case_000,0", "no_such_case,1"], None, "'no_such_case' has no images"),
    (["case_000,0", "case_001,high"], None, "case 'case_001' has class 'high', which is not an integer"),
    (["case_000,0", "case_001,2"], ["a", "b"], "case 'case_001' has class 2, out of range"),
    (["case_000,0", "case_001,1", "case_000,1"], None, "row 4: duplicate case id 'case_000'"),
    (["case_000,0", "case_001,0"], None, "At least two classes"),
])
def test_set_classes_refuses_naming_the_row(dataset, rows, names, message):
    ds, tmp = dataset
    before = Path(os.path.join(ds.folder, "dataset.json")).read_text()
    with pytest.raises(MVExtError, match=message):
        set_classes("321", _csv(tmp, rows), names)
    assert Path(os.path.join(ds.folder, "dataset.json")).read_text() == before


def test_wrong_header_is_refused(dataset):
    ds, tmp = dataset
    with pytest.raises(MVExtError, match="header 'case_id,class'"):
        set_classes("321", _csv(tmp, ["case_000,0"], header="id,label"))


def test_unlabelled_training_cases_are_named():
    meta = {"classification": {"class_names": {"0": "a", "1": "b"}, "labels": {"c1": 0, "c2": 1}}}
    assert require_labels(meta, ["c1", "c2"], "x") == {"c1": 0, "c2": 1}
    with pytest.raises(MVExtError, match="c3, c4"):
        require_labels(meta, ["c1", "c3", "c4"], "x")
    with pytest.raises(MVExtError, match="set-classes"):
        require_labels({}, ["c1"], "x")


def test_binary_metrics():
    y = [0, 0, 1, 1, 1]
    p = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    m = classification_metrics(y, p, ["neg", "pos"])
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(0.6) and m["auc"] == pytest.approx(5 / 6)


def test_multiclass_auc_is_one_vs_rest_macro():
    y = [0, 1, 2, 2]
    p = np.eye(3)[[0, 1, 2, 2]] * 0.7 + 0.1
    m = classification_metrics(y, p, ["a", "b", "c"])
    assert m["auc"] == pytest.approx(1.0) and m["accuracy"] == 1.0 and m["cohen_kappa"] == pytest.approx(1.0)


def test_duplicate_class_names_are_refused(dataset, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("case_id,class\ncase_000,0\ncase_001,1\n")
    with pytest.raises(MVExtError, match="class name 'a' is given twice"):
        set_classes("321", str(labels), ["a", "a"])


def test_header_only_csv_is_named_and_a_bom_is_accepted(dataset, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("case_id,class\n")
    with pytest.raises(MVExtError, match="empty.csv has a header but no case rows"):
        set_classes("321", str(empty))
    bom = tmp_path / "excel.csv"
    bom.write_bytes("case_id,class\ncase_000,0\ncase_001,1\n".encode("utf-8-sig"))
    assert set_classes("321", str(bom), ["x", "y"])


@pytest.mark.parametrize("encoding, delimiter", [("utf-16", ","), ("utf-16", "\t"), ("cp1252", ","),
                                                 ("latin-1", ",")])
def test_set_classes_reads_what_a_spreadsheet_saves(dataset, tmp_path, caplog, encoding, delimiter):
    """Excel's 'Unicode Text' (UTF-16 with its byte-order mark, tab-separated), UTF-16 CSV, and Windows-1252/latin-1
    with a non-ASCII character: read, the character decoded, the encoding logged."""
    caplog.set_level("INFO")
    path = tmp_path / "labels.csv"
    rows = ["case_id,class", "case_000,0", "case_001,1", "café_002,1"]
    path.write_bytes("\r\n".join(r.replace(",", delimiter) for r in rows).encode(encoding))
    with pytest.raises(MVExtError, match="case id 'café_002' has no images"):  # decoded, so named as written
        set_classes("321", str(path))
    assert ("UTF-16 LE (byte-order mark)" if encoding == "utf-16" else "Windows-1252 (cp1252)") in caplog.text
    path.write_bytes("\r\n".join(r.replace(",", delimiter) for r in rows[:3]).encode(encoding))
    assert set_classes("321", str(path), ["négatif", "positif"])
    block = json.loads(Path(os.path.join(dataset[0].folder, "dataset.json")).read_text())["classification"]
    assert block["labels"] == {"case_000": 0, "case_001": 1}


@pytest.mark.parametrize("data, message", [
    ("case_id,class\ncase_000,0\n".encode("utf-16-le"), "holds NUL bytes and no byte-order mark"),
    (b"case_id,class\ncase_000,0\n\x81\x8d,1\n", "neither UTF-8 \\(byte 0x81 at position 25 is invalid\\) nor "
                                                  "Windows-1252 text \\(byte 0x81 at position 25"),
])
def test_a_csv_in_no_readable_encoding_is_refused_naming_the_file_and_encoding(dataset, tmp_path, data, message):
    path = tmp_path / "labels.csv"
    path.write_bytes(data)
    with pytest.raises(MVExtError, match=f"labels.csv .*{message}"):
        set_classes("321", str(path))
