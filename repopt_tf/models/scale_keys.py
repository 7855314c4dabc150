"""How a family's hyper-search scales are named in the authors' state dicts.

A `ScaleKeys` reads one key of a `.pth` scales file (or a whole hyper-search
checkpoint) into `(block id, branch)`: the block id orders the blocks as the
model does, the branch is one of `"conv"`, `"1x1"`, `"identity"` of the
`load_scales` format (`repopt_tf.scales`). Each registered family carries
one (`ModelFamily.scale_keys`); `scales_from_state_dict` asks them all.
"""

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class ScaleKeys:
    """A family's scale-key pattern.

    Attributes:
        pattern: regex (full match) with a named group `branch` and one
            unnamed group per block-id part (a missing part reads as 0).
        branches: the `branch` group's text -> `"conv"`, `"1x1"` or
            `"identity"`.
        required: the branches every block must have.
        block_label: format string of a block id, e.g. `"stage{0}.{1}"`.
        example: the keys as a reader would search for them.
        branch_labels: how an error names a missing branch (default: the key
            text the branch is read from).
    """

    pattern: str
    branches: dict
    required: frozenset
    block_label: str
    example: str
    branch_labels: dict = dataclasses.field(default_factory=dict)

    def parse(self, key):
        """`(block id, branch)` of a scale key, or None for any other key."""
        match = re.fullmatch(self.pattern, key)
        if match is None:
            return None
        parts = [
            int(value or 0)
            for index, value in enumerate(match.groups(), start=1)
            if index != match.re.groupindex["branch"]
        ]
        return tuple(parts), self.branches[match.group("branch")]

    def missing_branch(self, block_id, branches):
        """An error phrase for a block lacking a required branch, or None."""
        missing = sorted(self.required - set(branches))
        if not missing:
            return None
        text = {ours: key for key, ours in self.branches.items()}
        lacking = self.branch_labels.get(missing[0], text[missing[0]])
        return f"block {self.block_label.format(*block_id)} lacks {lacking}"
