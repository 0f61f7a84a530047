"""The fusion-memory benchmark script: its recorded command reproduces the run; its table comes from the networks."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "benchmarks"))
import fusion_memory


def test_recorded_command_spells_out_every_option_and_parses_back_to_the_same_run():
    args = fusion_memory.parse_arguments(["--phases", "1,8", "--plans", "aniso", "--device", "cpu", "--steps", "4",
                                          "--cpu-patch-iso", "32", "32", "32", "--threads", "1", "--append", "R.md",
                                          "--encoders", "per_phase,cls_encoder"])
    assert vars(fusion_memory.parse_arguments(fusion_memory.explicit_arguments(args))) == vars(args)
    assert args.phases == [1, 8] and args.plans == ["aniso"] and args.warmup == 1 and args.batch == 1
    assert args.encoders == ["per_phase", "cls_encoder"]
    spelled = fusion_memory.explicit_arguments(fusion_memory.parse_arguments(["--device", "cpu"]))
    for option in ("--phases", "--plans", "--device", "--steps", "--warmup", "--batch", "--cpu-patch-iso",
                   "--cpu-patch-aniso", "--encoders"):
        assert option in spelled, option


@pytest.mark.parametrize("argv", [["--phases", "0,2"], ["--phases", "two"], ["--plans", "cubic"], ["--steps", "1"],
                                  ["--encoders", "per_phase,wide"]])
def test_bad_options_are_refused(argv):
    with pytest.raises(SystemExit):
        fusion_memory.parse_arguments(["--device", "cpu", *argv])


def test_the_typical_plan_gives_the_issue_s_ratios():
    """3 phases 1.98x, 4 phases 2.38x, 8 phases 3.95x (the review quoted in issue 16); parameters 32 M -> 135 M with
    network version 3 (the review's 161 M was version 2's ABAF head on 640-dimensional embeddings: its per-phase gates
    P^2 D^2 = 26 M; version 3 projects each phase's embedding to 128 dimensions)."""
    plan = fusion_memory.plans()["iso"]
    rows = {p: fusion_memory.estimates(plan, p) for p in (1, 3, 4, 8)}
    assert [round(rows[p]["fusion"] / rows[p]["plain"], 2) for p in (3, 4, 8)] == [1.98, 2.38, 3.95]
    assert round(rows[1]["plain_params"]) == 31 and round(rows[8]["fusion_params"]) == 135
    assert rows[8]["no_decoder"] < rows[8]["fusion"]


def test_smoke_run_appends_its_table_with_the_command(tmp_path):
    results = tmp_path / "RESULTS.md"
    lines = fusion_memory.main(["--smoke", "--phases", "1,2", "--device", "cpu", "--steps", "2", "--threads", "1",
                                "--encoders", "per_phase,cls_encoder", "--append", str(results)])
    text = results.read_text()
    assert "\n".join(lines) in text and "--phases 1,2 --plans smoke --device cpu --steps 2 --warmup 1" in text
    rows = [r.split(" | ") for r in lines if r.startswith("| smoke")]
    assert [(r[2], r[3]) for r in rows] == [("plain U-Net", "-"), ("1", "per_phase"), ("1", "cls_encoder"),
                                            ("2", "per_phase"), ("2", "cls_encoder")]
    assert 1 < float(rows[1][5]) < float(rows[3][5])  # the estimate ratio grows with the phases
    # the classification encoder adds its feature maps (from the second resolution on) to the estimate
    assert float(rows[3][5]) < float(rows[4][5]) < 1.5 * float(rows[3][5])
