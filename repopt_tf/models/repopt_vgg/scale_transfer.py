"""Scales searched for one RepOpt-VGG variant, mapped onto another one.

`transfer_scales(blocks, source, target)` gives every block of `target` the
scales of the `source` block at the same place, stage by stage (the stem is
stage 0):

- block 0 of a stage (stride 2, no identity branch) takes block 0's;
- block j >= 1 of n takes block `1 + round((j - 1) (m - 2) / (n - 2))` of
  the source stage's m, so blocks with an identity branch meet their like
  and the first and last of them line up;
- channel c of C takes channel `round(c (C' - 1) / (C - 1))` of the source
  block's C' (evenly spaced; the scales' order within a layer carries no
  meaning, their spread does).

It is how the authors' released B1 scales can stand in for a search on a
narrower or shallower model: a heuristic, measured as its own row in
`benchmarks/paper_tables.py`, not an equivalence.
"""

import numpy as np

from repopt_tf.models.family import variant_spec
from repopt_tf.models.repopt_vgg.model import VARIANTS
from repopt_tf.models.repopt_vgg.model import block_plan


def transfer_scales(blocks, source, target):
    """`load_scales`-format blocks of variant `source` -> those of `target`.

    Raises:
        ValueError: unknown variants, `blocks` not shaped like `source`, or
            a target stage with identity blocks where the source has none.
    """
    source_stages = _stages(source)
    expected = [width for stage in source_stages for width in stage]
    widths = [len(block["conv"]) for block in blocks]
    if widths != expected:
        raise ValueError(
            f"The scales have {len(blocks)} blocks of widths {widths}, not "
            f"{source}'s {len(expected)} of widths {expected}."
        )
    starts = np.cumsum([0] + [len(stage) for stage in source_stages])
    mapped = []
    for stage, target_widths in enumerate(_stages(target)):
        count = len(source_stages[stage])
        for index, width in enumerate(target_widths):
            picked = blocks[
                starts[stage] + _source_block(index, len(target_widths), count)
            ]
            channels = np.rint(
                np.linspace(0, len(picked["conv"]) - 1, width)
            ).astype(int)
            mapped.append(
                {
                    key: None if value is None else np.asarray(value)[channels]
                    for key, value in picked.items()
                }
            )
    return mapped


def _stages(variant):
    """Output widths of each stage's blocks, stage 0 (the stem) first."""
    stages = []
    spec = variant_spec(VARIANTS, variant, "RepOpt-VGG")
    for _, _, width, _, index in block_plan(spec, 3):
        if index == 0:
            stages.append([])
        stages[-1].append(width)
    return stages


def _source_block(index, count, source_count):
    if index == 0:
        return 0
    if source_count < 2:
        raise ValueError(
            "A target stage has blocks with an identity branch where the "
            "source stage has only its first block."
        )
    return 1 + round((index - 1) * (source_count - 2) / max(count - 2, 1))
