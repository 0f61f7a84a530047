#!/usr/bin/env bash
# The cross-validation workflow of docs/how_to/cross_validation.md on the synthetic data, tiny CPU budget:
# make-splits (grouped, stratified) -> 5 folds x 2 fusion modes -> evaluate-cls --cv (intervals, --store-threshold)
# -> compare-cls -> predict-cls on the held-out cases with the stored threshold.
# Usage: bash benchmarks/cross_validation_workflow.sh WORKDIR   (WORKDIR must not exist; about 30 CPU minutes)
set -euo pipefail
work=$(realpath -m "${1:?usage: cross_validation_workflow.sh WORKDIR}")
[ ! -e "$work" ] || { echo "$work exists; choose a new folder" >&2; exit 2; }
mkdir -p "$work"
export nnUNet_raw=$work/raw nnUNet_preprocessed=$work/pre nnUNet_results=$work/res
export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-1} nnUNet_def_n_proc=${nnUNet_def_n_proc:-1} nnUNet_compile=false
nnunet-mvext make-dataset --dataset-id 620 --num-train 20 --num-test 4 --seed 5
nnUNetv2_plan_and_preprocess -d 620 -c 3d_fullres -np 1 > "$work/plan.log" 2>&1
nnunet-mvext add-config 620 3d_tiny_cpu --name 3d_cv
python - "$work" <<'PY'
import csv, json, sys
work = sys.argv[1]
path = f"{work}/pre/Dataset620_MVExtSynthetic/nnUNetPlans.json"
plans = json.load(open(path))
plans["configurations"]["3d_cv"]["trainer_settings"].update(
    {"num_epochs": 2, "num_iterations_per_epoch": 6, "num_val_iterations_per_epoch": 2,
     "validation_mirroring": False, "seed": 0})
json.dump(plans, open(path, "w"), indent=2)
with open(f"{work}/groups.csv", "w", newline="") as f:  # two scans per patient
    writer = csv.writer(f)
    writer.writerow(["case_id", "group"])
    writer.writerows([(f"case_{i:03d}", f"patient_{i // 2}") for i in range(20)])
PY
nnunet-mvext make-splits 620 --groups "$work/groups.csv" --folds 5 --seed 0
for tr in nnUNetTrainerFusionConcat nnUNetTrainerFusionABAF; do
  for f in 0 1 2 3 4; do nnUNetv2_train 620 3d_cv $f -tr $tr -device cpu > "$work/train_${tr}_$f.log" 2>&1; done
done
nnunet-mvext evaluate-cls --cv -d 620 -c 3d_cv -tr nnUNetTrainerFusionConcat -o "$work/cv_concat"
nnunet-mvext evaluate-cls --cv -d 620 -c 3d_cv -tr nnUNetTrainerFusionABAF -o "$work/cv_abaf" --store-threshold
nnunet-mvext compare-cls -ref "$work/raw/Dataset620_MVExtSynthetic/dataset.json" "$work/cv_concat/oof_classification.csv" \
    "$work/cv_abaf/oof_classification.csv" -o "$work/cmp"
nnunet-mvext predict-cls -i "$work/raw/Dataset620_MVExtSynthetic/imagesTs" -o "$work/pred" -d 620 -c 3d_cv \
    -f 0 1 2 3 4 -tr nnUNetTrainerFusionABAF -device cpu --disable_tta --threshold stored
