"""The MBTFE benchmark script: its recorded command reproduces the run, its tables come from the script."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "benchmarks"))
import mbtfe_step_time


def test_recorded_command_spells_out_every_option_and_parses_back_to_the_same_run():
    args = mbtfe_step_time.parse_arguments(["--smoke", "--models", "mbtfe-only,ours", "--steps", "12", "--warmup", "2",
                                            "--patch", "48", "--memory-patch", "64", "--volume", "80",
                                            "--inference-runs", "2",
                                            "--inference-warmup", "2", "--device", "cpu", "--threads", "1",
                                            "--append", "R.md"])
    explicit = mbtfe_step_time.explicit_arguments(args)
    assert vars(mbtfe_step_time.parse_arguments(explicit)) == vars(args)
    assert args.models == ["plain", "ours", "mbtfe-only"]
    defaults = mbtfe_step_time.parse_arguments([])
    spelled = mbtfe_step_time.explicit_arguments(defaults)
    assert defaults.steps >= 10 and defaults.warmup >= 1 and defaults.inference_warmup >= 1
    for option in ("--steps", "--warmup", "--patch", "--memory-patch", "--volume", "--inference-runs",
                   "--inference-warmup", "--device", "--models"):
        assert option in spelled, option


@pytest.mark.parametrize("argv", [["--steps", "2"], ["--inference-warmup", "0"], ["--models", "nope"]])
def test_too_few_steps_no_warm_up_or_unknown_models_are_refused(argv):
    with pytest.raises(SystemExit):
        mbtfe_step_time.parse_arguments(argv)


def test_smoke_run_appends_its_tables_with_the_command(tmp_path):
    results = tmp_path / "RESULTS.md"
    lines = mbtfe_step_time.main(["--smoke", "--models", "", "--warmup", "1", "--volume", "32", "--inference-runs",
                                  "1", "--device", "cpu", "--threads", "1", "--append", str(results)])
    text = results.read_text()
    assert "\n".join(lines) in text and "--steps 10 --warmup 1 --patch 32 --memory-patch 32 --volume 32" in text
    memory = [row for row in lines if row.startswith("| ours (MBTFEUNet defaults) |")][1].split(" | ")
    assert float(memory[4]) == pytest.approx(1.0, abs=0.05)  # estimate / conv outputs counted by hooks
