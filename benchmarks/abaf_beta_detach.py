"""Should ABAF's phase weights beta be constants in the auxiliary loss? Train both ways and compare.

Classification only (the fusion network's encoders, its default lesion embedding pooled over the whole crop, and the
ABAF head; no decoder), on ground-truth lesion-centred crops of the synthetic multi-phase dataset, several seeds
per setting; reports held-out AUC and accuracy and the mean phase weights beta (arterial, portal-venous, delayed) on
the held-out cases.

    python benchmarks/abaf_beta_detach.py [--steps 300] [--seeds 3] [--append benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import tempfile

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nnunet_mvext.architectures.multiphase_fusion_net import MultiPhaseFusionNet
from nnunet_mvext.classification.case_prediction import crop_around, select_region
from nnunet_mvext.classification.metrics import classification_metrics
from nnunet_mvext.synthetic.multiphase import generate_multiphase_dataset
from results_file import report

logger = logging.getLogger("abaf_beta_detach")
PLAN = dict(n_stages=4, features_per_stage=[8, 16, 32, 64], conv_op=torch.nn.Conv3d, kernel_sizes=[[3, 3, 3]] * 4,
            strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=[2] * 4,
            n_conv_per_stage_decoder=[1] * 3, conv_bias=True, norm_op=torch.nn.InstanceNorm3d,
            norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None, dropout_op_kwargs=None,
            nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True})


def lesion_crops(dataset, split: str, crop: int) -> tuple[torch.Tensor, np.ndarray]:
    """Ground-truth lesion-centred crops (N, 3, crop^3), z-scored per channel, and their labels.

    The crop is centred on the lesion (label 2) component that ``select_region`` picks, as ``predict-cls --roi``
    does; a case without a lesion voxel is cropped at the volume centre.
    """
    cases = dataset.train_cases if split == "Tr" else dataset.test_cases
    xs, ys = [], []
    for c in cases:
        images = np.stack([sitk.GetArrayFromImage(sitk.ReadImage(
            os.path.join(dataset.folder, f"images{split}", f"{c.case_id}_{p:04d}.nii.gz"))) for p in range(3)])
        seg = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(dataset.folder, f"labels{split}",
                                                                 f"{c.case_id}.nii.gz")))
        centre = select_region(seg, 2, seg.shape).centre
        x = crop_around(torch.from_numpy(images.astype(np.float32)), centre, (crop,) * 3)
        x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / (x.std(dim=(1, 2, 3), keepdim=True) + 1e-6)
        xs.append(x)
        ys.append(c.label)
    return torch.stack(xs), np.array(ys)


def run(detach: bool, seed: int, data, steps: int) -> tuple[dict, np.ndarray]:
    (x_tr, y_tr), (x_te, y_te) = data
    torch.manual_seed(seed)
    net = MultiPhaseFusionNet("dynamic_network_architectures.architectures.unet.PlainConvUNet", PLAN, 3, 3, 2,
                              "abaf", head_options={"detach_beta": detach}, segmentation=False)
    net.apply(net.initialize)
    params = [p for n, p in net.named_parameters() if not n.startswith(("decoder.", "skip_fusion."))]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    y = torch.from_numpy(y_tr).long()
    for _ in range(steps):
        idx = torch.randint(0, len(x_tr), (8,))
        xb = x_tr[idx]
        for axis in (2, 3, 4):
            if torch.rand(()) < 0.5:
                xb = torch.flip(xb, (axis,))
        _, out = net.forward_with_classification(xb)
        loss = net.head.loss(out, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        _, out = net.forward_with_classification(x_te)
    probs = torch.softmax(out["logits"], 1).numpy()
    return classification_metrics(y_te, probs, ["persistent", "washout"]), out["beta"].mean(0).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--num-train", type=int, default=48)
    parser.add_argument("--num-test", type=int, default=48)
    parser.add_argument("--append", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    ds = generate_multiphase_dataset(tempfile.mkdtemp(), dataset_id=509, num_train=args.num_train,
                                     num_test=args.num_test, shape=(32, 32, 32), seed=5)
    data = (lesion_crops(ds, "Tr", 24), lesion_crops(ds, "Ts", 24))
    lines = [f"### ABAF: beta detached or not in the auxiliary loss, {datetime.date.today()}, CPU, "
             f"torch {torch.__version__}", "",
             f"`python benchmarks/abaf_beta_detach.py {' '.join(sys.argv[1:])}`: classification only, ground-truth "
             f"lesion crops 24^3, {args.num_train} training / {args.num_test} held-out cases, {args.steps} AdamW "
             f"steps of batch 8, seeds 0..{args.seeds - 1}.", "",
             "| abaf_detach_beta | AUC per seed | mean AUC | mean accuracy | mean beta (art., pv, del.) |",
             "| --- | --- | --- | --- | --- |"]
    for detach in (True, False):
        aucs, accs, betas = [], [], []
        for seed in range(args.seeds):
            m, beta = run(detach, seed, data, args.steps)
            aucs.append(m["auc"])
            accs.append(m["accuracy"])
            betas.append(beta)
            logger.info("detach=%s seed=%d AUC %.3f acc %.3f beta %s", detach, seed, m["auc"], m["accuracy"],
                        np.round(beta, 3))
        lines.append(f"| {str(detach).lower()} | {', '.join(f'{a:.3f}' for a in aucs)} | {np.mean(aucs):.3f} | "
                     f"{np.mean(accs):.3f} | {', '.join(f'{b:.2f}' for b in np.mean(betas, 0))} |")
    report(lines, args.append)


if __name__ == "__main__":
    main()
