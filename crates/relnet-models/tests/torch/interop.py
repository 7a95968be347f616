#!/usr/bin/env python3
"""PyTorch <-> relnet weight interchange check (needs torch and safetensors; not run in CI).

    python3 -m venv /tmp/torchref && /tmp/torchref/bin/pip install torch safetensors numpy
    /tmp/torchref/bin/python crates/relnet-models/tests/torch/interop.py

1. relnet exports Conv-4 and ResNet-8 to safetensors; PyTorch modules with the reference's
   layout and names (written here from the reference's description) load them with
   strict=True and must reproduce relnet's eval-mode features.
2. PyTorch saves its own randomly initialised models (with perturbed BN statistics, and its
   num_batches_tracked counters); relnet imports them and must reproduce PyTorch's features.
Prints the largest absolute difference per direction and exits non-zero above 1e-4.
"""
import os
import subprocess
import sys
import tempfile

from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../../../.."))


def block(cin, cout, pool):
    layers = [("conv", nn.Conv2d(cin, cout, 3, 1, 1, bias=False)), ("bn", nn.BatchNorm2d(cout)), ("relu", nn.ReLU())]
    if pool:
        layers.append(("pool", nn.AvgPool2d(2)))
    return nn.Sequential(OrderedDict(layers))


class Conv4(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1, self.layer2 = block(3, 8, True), block(8, 16, True)
        self.layer3, self.layer4 = block(16, 32, True), block(32, 64, False)

    def forward(self, x):
        return self.layer4(self.layer3(self.layer2(self.layer1(x)))).mean((2, 3))


class Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet8(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        self.layer1 = nn.Sequential(Basic(16, 16, 1))
        self.layer2 = nn.Sequential(Basic(16, 32, 2))
        self.layer3 = nn.Sequential(Basic(32, 64, 2))

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x))).mean((2, 3))


def run(mode, d):
    subprocess.run(["cargo", "run", "-q", "-p", "relnet-models", "--example", "torch_interop", "--", mode, d], cwd=ROOT, check=True)


def main():
    worst = 0.0
    with tempfile.TemporaryDirectory() as d:
        run("export", d)
        for name, cls in [("conv4", Conv4), ("resnet8", ResNet8)]:
            x = torch.from_numpy(np.fromfile(f"{d}/{name}_input.f32", dtype="<f4").reshape(2, 3, 32, 32))
            want = np.fromfile(f"{d}/{name}_relnet.f32", dtype="<f4").reshape(2, -1)
            m = cls().eval()
            # strict: every key matches (BatchNorm fills in an absent num_batches_tracked itself).
            m.load_state_dict(load_file(f"{d}/{name}.safetensors"), strict=True)
            diff = float(np.abs(m(x).detach().numpy() - want).max())
            print(f"{name}: relnet -> PyTorch (strict load) max |diff| = {diff:.2e}")
            worst = max(worst, diff)
            torch.manual_seed(11)
            t = cls()
            with torch.no_grad():
                for mod in t.modules():
                    if isinstance(mod, nn.BatchNorm2d):
                        mod.running_mean.uniform_(-0.5, 0.5)
                        mod.running_var.uniform_(0.5, 2.0)
                        mod.weight.uniform_(0.5, 1.5)
                        mod.bias.uniform_(-0.2, 0.2)
            t.eval()
            save_file({k: v.contiguous() for k, v in t.state_dict().items()}, f"{d}/{name}_torch.safetensors")
            np.save(f"{d}/{name}_torch_out.npy", t(x).detach().numpy())
        run("import", d)
        for name in ["conv4", "resnet8"]:
            got = np.fromfile(f"{d}/{name}_imported.f32", dtype="<f4").reshape(2, -1)
            diff = float(np.abs(got - np.load(f"{d}/{name}_torch_out.npy")).max())
            print(f"{name}: PyTorch -> relnet max |diff| = {diff:.2e}")
            worst = max(worst, diff)
    sys.exit(0 if worst < 1e-4 else 1)


if __name__ == "__main__":
    main()
