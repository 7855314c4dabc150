"""Writes the tiny RepOpt-GhostNet checkpoint fixtures in
tests/fixtures/checkpoints/ with the authors' own model code.

Run once, with torch, in a throwaway environment, pointing at a checkout of
DingXiaoH/RepOptimizers (its `repoptimizer/repoptghostnet_model.py` builds
the models; nothing of it is copied here):

    python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy
    /tmp/torchenv/bin/python scripts/make_ghostnet_fixtures.py \\
        --reference=/path/to/RepOptimizers

The network is `repopt_ghostnet_tiny` (the `TINY_STAGES` of
repopt_tf/models/repopt_ghostnet/model.py, read from the source without importing
Keras; width 0.5) with 10 classes, in the reference's modes `target`, `hs`
and `rep`. Every BN gets random statistics and affine parameters, every
scale random values, so that folding and scales are exercised.
`ghostnet_reference.npz` holds raw-pixel test images and each model's
eval-mode logits (inputs normalised with ImageNet's mean and std, as our
models do inside).
"""

import argparse
import ast
import contextlib
import io
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests/fixtures/checkpoints"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLASSES, SIZE, WIDTH = 10, 32, 0.5


def tiny_stages():
    """`TINY_STAGES` from the library's source, as the reference's cfgs."""
    source = (ROOT / "repopt_tf/models/repopt_ghostnet/model.py").read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "TINY_STAGES":
            return [
                [list(row) for row in stage]
                for stage in ast.literal_eval(node.value)
            ]
    raise SystemExit("TINY_STAGES not found")


def randomize(model, generator):
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.3, 0.3, generator=generator)
                module.running_mean.uniform_(-0.5, 0.5, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
            elif type(module).__name__ == "ScaleLayer":
                module.weight.uniform_(0.3, 1.5, generator=generator)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reference", required=True, type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(args.reference))
    from repoptimizer.repoptghostnet_model import RepOptGhostNet

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, SIZE, SIZE, 3)).astype(np.float32)
    x = torch.from_numpy(images / 255.0).permute(0, 3, 1, 2)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(
        1, 3, 1, 1
    )
    logits = {"images": images}
    for mode in ("target", "hs", "rep"):
        with contextlib.redirect_stdout(io.StringIO()):  # its mode banners
            model = RepOptGhostNet(
                tiny_stages(), num_classes=CLASSES, width=WIDTH, mode=mode
            )
        randomize(model, generator)
        model.eval()
        with torch.no_grad():
            logits[mode] = model(x).numpy()
        path = OUT / f"ghostnet_tiny_{mode}.pth"
        torch.save(model.state_dict(), path)
        print(f"{path.name}: {path.stat().st_size} bytes")
    np.savez(OUT / "ghostnet_reference.npz", **logits)


if __name__ == "__main__":
    main()
