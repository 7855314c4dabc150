"""Writes the tiny timm checkpoint fixtures in tests/fixtures/checkpoints/
with timm's own model code, as `.safetensors` (timm's hub format).

Run once, in a throwaway environment (timm and torch are never
dependencies of this library):

    python -m venv /tmp/timmenv && /tmp/timmenv/bin/pip install timm safetensors
    /tmp/timmenv/bin/python scripts/make_timm_fixtures.py

- `timm_repvgg_tiny.safetensors`: timm's `ByobNet` with RepVGG blocks
  (`stem_type="rep"`, as `repvgg_a0` ... are built) at the shape of our
  `repopt_vgg_tiny` (blocks 1, 2, 1, 1; widths 8, 16, 16, 32; stem 8), in
  its training form; `timm_repvgg_tiny_reparam.safetensors`: the same model
  after timm's `reparameterize_model`.
- `timm_repghostnet_tiny.safetensors`: timm's `RepGhostNet` with our
  `repopt_ghostnet_tiny` stages (`TINY_STAGES` of
  repopt_tf/models/repopt_ghostnet/model.py, read from the source) at width 0.5.

`pretrained=False`, 10 classes; every BN gets random statistics and affine
parameters so that folding is exercised. `timm_reference.npz` holds
raw-pixel test images and each model's eval-mode logits (inputs normalised
with ImageNet's mean and std, as our models do inside).
`timm_key_shapes.json.gz` lists the key and shape of every tensor timm's
full-size `FULL_SIZE` models hold (1000 classes): the names and shapes the
layouts must map, without the weights.
"""

import gzip
import json
from pathlib import Path

import numpy as np
import timm
import torch

# The same tiny GhostNet stages and BN randomization as the authors' fixtures.
from make_ghostnet_fixtures import randomize
from make_ghostnet_fixtures import tiny_stages
from safetensors.torch import save_file
from timm.models.byobnet import ByobNet
from timm.models.byobnet import ByoModelCfg
from timm.models.byobnet import _rep_vgg_bcfg
from timm.models.repghost import RepGhostNet
from timm.utils.model import reparameterize_model

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests/fixtures/checkpoints"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLASSES, SIZE = 10, 32
# repopt_vgg_tiny: blocks (1, 2, 1, 1), widths (8, 16, 16, 32), stem 8.
VGG_TINY = ByoModelCfg(
    blocks=_rep_vgg_bcfg(
        d=(1, 2, 1, 1), wf=(8 / 64, 16 / 128, 16 / 256, 32 / 512)
    ),
    stem_type="rep",
    stem_chs=8,
)


FULL_SIZE = [
    *(f"repvgg_{v}" for v in ("a0", "a1", "a2", "b0", "b1", "b1g4")),
    *(f"repvgg_{v}" for v in ("b2", "b2g4", "b3", "b3g4", "d2se")),
    *(f"repghostnet_{w}" for w in ("050", "058", "080", "100", "111")),
    *(f"repghostnet_{w}" for w in ("130", "150", "200")),
]


def key_shapes():
    shapes = {}
    for name in FULL_SIZE:
        state = timm.create_model(name, pretrained=False).state_dict()
        shapes[name] = {
            key: list(value.shape)
            for key, value in state.items()
            if not key.endswith("num_batches_tracked")
        }
        print(f"{name}: {len(shapes[name])} tensors")
    with gzip.open(OUT / "timm_key_shapes.json.gz", "wt") as file:
        json.dump(shapes, file)


def save(model, name):
    state = {
        key: value.contiguous()
        for key, value in model.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }
    path = OUT / f"{name}.safetensors"
    save_file(state, str(path), metadata={"format": "pt"})
    print(f"{path.name}: {path.stat().st_size} bytes, {len(state)} tensors")


def main():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    images = np.random.default_rng(0).uniform(0, 255, (4, SIZE, SIZE, 3))
    images = images.astype(np.float32)
    x = torch.from_numpy(images / 255.0).permute(0, 3, 1, 2)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(
        1, 3, 1, 1
    )
    logits = {"images": images}
    models = {
        "timm_repvgg_tiny": ByobNet(VGG_TINY, num_classes=CLASSES),
        "timm_repghostnet_tiny": RepGhostNet(
            tiny_stages(), num_classes=CLASSES, width=0.5
        ),
    }
    for name, model in models.items():
        randomize(model, generator)
        model.eval()
        with torch.no_grad():
            logits[name] = model(x).numpy()
        save(model, name)
    reparam = reparameterize_model(models["timm_repvgg_tiny"])
    with torch.no_grad():
        logits["timm_repvgg_tiny_reparam"] = reparam(x).numpy()
    save(reparam, "timm_repvgg_tiny_reparam")
    np.savez(OUT / "timm_reference.npz", **logits)
    key_shapes()


if __name__ == "__main__":
    main()
