"""benchmarks/optimizer_step_time.py: what it appends can be reproduced from the entry alone."""

import datetime
import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "optimizer_step_time.py")


def test_appended_entry_records_the_exact_command_device_and_versions(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# earlier content\n")
    args = ["--smoke", "--steps", "10", "--warmup", "2", "--threads", "1", "--append", str(results)]
    r = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    text = results.read_text()
    assert text.startswith("# earlier content\n")
    assert f"### Optimizer step time, {datetime.date.today()}, " in text and f"torch {torch.__version__}" in text
    assert f"`python benchmarks/optimizer_step_time.py {' '.join(args)}`" in text
    assert "2 untimed warm-up steps, then 10 timed steps per optimizer" in text
    rows = [line for line in text.splitlines() if line.startswith("| nnU-Net SGD") or line.startswith("| timm Adan")]
    assert len(rows) == 2 and all(len(row.split("|")) == 7 for row in rows), rows


def test_fewer_than_ten_timed_steps_are_refused():
    r = subprocess.run([sys.executable, SCRIPT, "--smoke", "--steps", "2"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "--steps 2: a median needs at least 10 timed steps" in r.stderr
