"""Writes the tiny PyTorch checkpoint fixtures in tests/fixtures/checkpoints/.

Run once, with torch, in a throwaway environment (torch is never a dependency
of repopt_tf or of its tests):

    python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch yacs
    /tmp/torchenv/bin/python scripts/make_checkpoint_fixtures.py
    /tmp/torchenv/bin/python scripts/make_checkpoint_fixtures.py \\
        --b1=/tmp/RepOpt-VGG-B1-random.pth   # full size, not committed

The modules below are written for this script and reproduce only the state-
dict key layouts and the forward maths of the reference code
(DingXiaoH/RepOptimizers `repoptvgg_model.py`, DingXiaoH/RepVGG `repvgg.py`):
module names `stage0` (one block), `stage1`..`stage4` (sequences of blocks),
`linear`. The shape is `repopt_vgg_tiny` (blocks 1, 2, 1, 1; widths 8, 16,
16, 32; stem 8) with 10 classes. Every BN gets random statistics and affine
parameters so that BN folding is exercised. `reference.npz` holds raw-pixel
test images and each model's eval-mode logits.
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode

OUT = Path(__file__).resolve().parents[1] / "tests/fixtures/checkpoints"
BLOCKS, WIDTHS, STEM, CLASSES, SIZE = (1, 2, 1, 1), (8, 16, 16, 32), 8, 10, 32
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _bn(channels):
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.3, 0.3)
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return bn


def _conv(cin, cout, size, stride, bias=False):
    return nn.Conv2d(cin, cout, size, stride, padding=size // 2, bias=bias)


class _Scale(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels).uniform_(0.2, 1.5))

    def forward(self, x):
        return x * self.weight.view(1, -1, 1, 1)


class TargetBlock(nn.Module):  # keys: conv, bn
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv, self.bn = _conv(cin, cout, 3, stride), _bn(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class HSBlock(
    nn.Module
):  # keys: conv, scale_conv, conv_1x1, scale_1x1, [scale_identity], bn
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv, self.scale_conv = _conv(cin, cout, 3, stride), _Scale(cout)
        self.conv_1x1, self.scale_1x1 = (
            _conv(cin, cout, 1, stride),
            _Scale(cout),
        )
        if cin == cout and stride == 1:
            self.scale_identity = _Scale(cout)
        self.bn = _bn(cout)

    def forward(self, x):
        out = self.scale_conv(self.conv(x)) + self.scale_1x1(self.conv_1x1(x))
        if hasattr(self, "scale_identity"):
            out = out + self.scale_identity(x)
        return F.relu(self.bn(out))


class RepOptRepVGGBlock(
    nn.Module
):  # keys: conv_3x3, bn_3x3, conv_1x1, bn_1x1, [bn_identity]
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv_3x3, self.bn_3x3 = _conv(cin, cout, 3, stride), _bn(cout)
        self.conv_1x1, self.bn_1x1 = _conv(cin, cout, 1, stride), _bn(cout)
        if cin == cout and stride == 1:
            self.bn_identity = _bn(cout)

    def forward(self, x):
        out = self.bn_3x3(self.conv_3x3(x)) + self.bn_1x1(self.conv_1x1(x))
        if hasattr(self, "bn_identity"):
            out = out + self.bn_identity(x)
        return F.relu(out)


def _conv_bn(cin, cout, size, stride):
    branch = nn.Sequential()
    branch.add_module("conv", _conv(cin, cout, size, stride))
    branch.add_module("bn", _bn(cout))
    return branch


class RepVGGTrainBlock(
    nn.Module
):  # keys: rbr_dense.{conv,bn}, rbr_1x1.{conv,bn}, [rbr_identity]
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.rbr_identity = _bn(cin) if cin == cout and stride == 1 else None
        self.rbr_dense = _conv_bn(cin, cout, 3, stride)
        self.rbr_1x1 = _conv_bn(cin, cout, 1, stride)

    def forward(self, x):
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x)
        return F.relu(out)

    def fused(self):
        """(kernel, bias) of the three branches as one 3x3 conv."""

        def fold(kernel, bn):
            t = bn.weight / (bn.running_var + bn.eps).sqrt()
            return kernel * t.view(-1, 1, 1, 1), bn.bias - bn.running_mean * t

        kernel, bias = fold(self.rbr_dense.conv.weight, self.rbr_dense.bn)
        k1, b1 = fold(
            F.pad(self.rbr_1x1.conv.weight, [1, 1, 1, 1]), self.rbr_1x1.bn
        )
        kernel, bias = kernel + k1, bias + b1
        if self.rbr_identity is not None:
            channels = kernel.shape[0]
            eye = torch.zeros_like(kernel)
            eye[range(channels), range(channels), 1, 1] = 1.0
            ki, bi = fold(eye, self.rbr_identity)
            kernel, bias = kernel + ki, bias + bi
        return kernel.detach(), bias.detach()


class RepVGGDeployBlock(nn.Module):  # keys: rbr_reparam (with bias)
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.rbr_reparam = _conv(cin, cout, 3, stride, bias=True)

    def forward(self, x):
        return F.relu(self.rbr_reparam(x))


class Net(nn.Module):
    def __init__(
        self,
        block,
        stage_type=nn.Sequential,
        blocks=BLOCKS,
        widths=WIDTHS,
        stem=STEM,
        classes=CLASSES,
    ):
        super().__init__()
        self.stage0 = block(3, stem, 2)
        cin = stem
        for stage, (depth, width) in enumerate(zip(blocks, widths), start=1):
            blocks = []
            for index in range(depth):
                blocks.append(block(cin, width, 2 if index == 0 else 1))
                cin = width
            setattr(
                self,
                f"stage{stage}",
                stage_type(*blocks)
                if stage_type is nn.Sequential
                else stage_type(blocks),
            )
        self.linear = nn.Linear(cin, classes)

    def forward(self, raw_pixels_nhwc):
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        std = torch.tensor(STD).view(1, 3, 1, 1)
        x = (raw_pixels_nhwc.permute(0, 3, 1, 2) / 255.0 - mean) / std
        x = self.stage0(x)
        for stage in (self.stage1, self.stage2, self.stage3, self.stage4):
            for block in stage:
                x = block(x)
        return self.linear(x.mean(dim=(2, 3)))


def _logits(model, images):
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(images)).numpy()


def write_b1(path):
    """A full-size RepOpt-VGG-B1 target (random weights) in the training
    script's layout, to try the import and export at the real size."""
    torch.manual_seed(0)
    model = Net(
        TargetBlock,
        blocks=(4, 6, 16, 1),
        widths=(128, 256, 512, 2048),
        stem=64,
        classes=1000,
    )
    config = CfgNode({"MODEL": {"ARCH": "RepOpt-VGG-B1-target"}})
    torch.save(
        {"model": model.state_dict(), "epoch": 119, "config": config}, path
    )
    print(f"{path}: {Path(path).stat().st_size / 2**20:.1f} MB")


def main():
    if len(sys.argv) == 2 and sys.argv[1].startswith("--b1="):
        return write_b1(sys.argv[1][len("--b1=") :])
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3))
    images = pixels.astype(np.float32)
    reference = {"images": pixels.astype(np.uint8)}

    target = Net(TargetBlock)
    torch.save(target.state_dict(), OUT / "repopt_tiny_target.pth")
    reference["repopt_tiny_target"] = _logits(target, images)

    # The training script's layout: model, optimizer, config, epoch, ema.
    hs = Net(HSBlock)
    ema = Net(HSBlock)
    optimizer = torch.optim.SGD(hs.parameters(), lr=0.1, momentum=0.9)
    hs(torch.rand(2, SIZE, SIZE, 3) * 255).sum().backward()
    optimizer.step()
    config = CfgNode(
        {
            "MODEL": {"ARCH": "RepOpt-VGG-tiny-hs"},
            "TRAIN": {"BASE_LR": 0.1, "EPOCHS": 240},
        }
    )
    torch.save(
        {
            "model": hs.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": {"last_epoch": 5},
            "max_accuracy": torch.tensor(61.5),
            "epoch": 5,
            "config": config,
            "ema": ema.state_dict(),
            "dtypes": {
                "bf16": torch.tensor([1.5, -2.25], dtype=torch.bfloat16),
                "int64": torch.tensor([7, -8]),
                "bool": torch.tensor([True, False]),
            },
        },
        OUT / "repopt_tiny_hs_latest.pth",
    )
    reference["repopt_tiny_hs"] = _logits(hs, images)
    reference["repopt_tiny_hs_ema"] = _logits(ema, images)

    repopt_repvgg = Net(RepOptRepVGGBlock)
    # Saved from a DistributedDataParallel wrapper: keys start with module.
    torch.save(
        {f"module.{k}": v for k, v in repopt_repvgg.state_dict().items()},
        OUT / "repopt_tiny_repvgg.pth",
    )
    reference["repopt_tiny_repvgg"] = _logits(repopt_repvgg, images)

    train = Net(RepVGGTrainBlock, nn.ModuleList)
    torch.save(train.state_dict(), OUT / "repvgg_tiny_train.pth")
    reference["repvgg_tiny_train"] = _logits(train, images)

    deploy = Net(RepVGGDeployBlock, nn.ModuleList)
    with torch.no_grad():
        pairs = [(train.stage0, deploy.stage0)] + [
            (a, b)
            for name in ("stage1", "stage2", "stage3", "stage4")
            for a, b in zip(getattr(train, name), getattr(deploy, name))
        ]
        for source, fused in pairs:
            fused.rbr_reparam.weight.copy_(source.fused()[0])
            fused.rbr_reparam.bias.copy_(source.fused()[1])
        deploy.linear.load_state_dict(train.linear.state_dict())
    torch.save(deploy.state_dict(), OUT / "repvgg_tiny_deploy.pth")
    reference["repvgg_tiny_deploy"] = _logits(deploy, images)

    # A groupwise conv (RepVGG g2/g4 layers): torch weight, input and output.
    grouped = nn.Conv2d(8, 8, 3, 1, padding=1, groups=2, bias=False)
    x = torch.rand(2, 8, 5, 5)
    reference["grouped_weight"] = grouped.weight.detach().numpy()
    reference["grouped_input"] = x.permute(0, 2, 3, 1).numpy()
    with torch.no_grad():
        reference["grouped_output"] = grouped(x).permute(0, 2, 3, 1).numpy()

    np.savez(OUT / "reference.npz", **reference)
    for path in sorted(OUT.iterdir()):
        print(f"{path.name}: {path.stat().st_size / 1024:.1f} KB")


if __name__ == "__main__":
    main()
