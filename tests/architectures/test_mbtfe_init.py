"""MBTFE and EAB are the identity at initialisation (zero-initialised residual scales), also after nnU-Net's init."""

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from dynamic_network_architectures.initialization.weight_init import InitWeights_He

from nnunet_mvext.architectures.mbtfe_knobs import SEED_KNOBS
from nnunet_mvext.architectures.mbtfe_unet import MBTFEUNet

from test_mbtfe_memory_estimate import ANISOTROPIC, SIZE


def relative_changes(net: MBTFEUNet, x: torch.Tensor) -> dict[str, float]:
    """``||out - in|| / ||in||`` of every MBTFE block and every EAB-gated skip in one forward pass."""
    changes = {}

    def block_hook(name):
        def hook(module, inputs, output):
            if isinstance(output, list):
                for i, (a, b) in enumerate(zip(inputs[0], output)):
                    changes[f"{name}[{i}]"] = ((b - a).norm() / a.norm()).item()
            else:
                changes[name] = ((output - inputs[0]).norm() / inputs[0].norm()).item()
        return hook

    handles = [block.register_forward_hook(block_hook(f"mbtfe{i}")) for i, block in net.mbtfe.items()]
    handles.append(net.eab.register_forward_hook(block_hook("eab")))
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return changes


def initialised(**knobs) -> MBTFEUNet:
    torch.manual_seed(0)
    net = MBTFEUNet(**ANISOTROPIC, **knobs)
    net.apply(InitWeights_He(1e-2))  # what nnU-Net's get_network_from_plans and MultiPhaseFusionNet do
    return net


def test_blocks_are_the_identity_at_init_after_nnunets_weight_init():
    net = initialised()
    assert all(b.gamma.item() == 0 for b in net.mbtfe.values()) and torch.all(net.eab.gamma == 0)
    changes = relative_changes(net, torch.randn(2, 2, *SIZE))
    assert len(changes) == len(net.mbtfe) + len(net.eab.channels)
    assert max(changes.values()) == 0.0, changes


def test_the_seed_layout_is_not_the_identity_so_the_measurement_means_something():
    changes = relative_changes(initialised(**SEED_KNOBS), torch.randn(2, 2, *SIZE))
    assert min(changes.values()) > 0.2, changes


def test_mbtfeunet_at_init_computes_what_the_plain_unet_computes():
    net = initialised()
    plain = PlainConvUNet(**ANISOTROPIC)
    missing, unexpected = net.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith(("mbtfe.", "eab.")) for k in missing)
    x = torch.randn(1, 2, *SIZE)
    with torch.no_grad():
        for a, b in zip(net(x), plain(x)):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("knob", ["mbtfe_residual", "eab_residual"])
def test_the_scales_learn_and_then_the_blocks_do(knob):
    net = initialised(**({"eab_residual": False} if knob == "mbtfe_residual" else {"mbtfe_residual": False}))
    block = net.mbtfe["2"] if knob == "mbtfe_residual" else net.eab
    branch_conv = block.chain[0].conv if knob == "mbtfe_residual" else block.gates[0].theta
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    x = torch.randn(2, 2, *SIZE)
    grads = []
    for _ in range(2):
        opt.zero_grad()
        sum(o.square().mean() for o in net(x)).backward()
        grads.append((block.gamma.grad.abs().sum().item(), branch_conv.weight.grad.abs().sum().item()))
        opt.step()
    assert grads[0][0] > 0 and grads[0][1] == 0      # step 1: only gamma has a gradient
    assert torch.all(block.gamma != 0) and grads[1][1] > 0  # step 2: gamma moved, the block's convs learn
