"""timm's RepGhostNet state-dict layout (`.safetensors` from the Hugging
Face hub, or `.pth`), mapped onto our models.

`TIMM_REPGHOSTNET` (timm `repghost.py`, `repghostnet_050` ...
`repghostnet_200`): the RepGhostNet baseline form (kind repghost) of the
authors' layout (`layouts.GHOSTNET`), whose keys it shares but for the
identity BN of each ghost module, `fusion_bn.0` (a one-BN `Sequential`).
"""

import re

from repopt_tf.models.repopt_ghostnet.layouts import RepOptGhostNetLayout
from repopt_tf.models.state_dict_layout import Form


class TimmRepGhostNetLayout(RepOptGhostNetLayout):
    """timm's RepGhostNet (module docstring)."""

    forms = (
        Form(
            "timm_repghost",
            "repghost",
            "timm RepGhostNet form (fusion_bn.0)",
            {"bn": "cheap_operation.1", "bn_identity": "fusion_bn.0"},
            "fusion_bn",
        ),
    )
    _FUSION = re.compile(r".*\.fusion_bn\.0\.\w+")

    def recognizes(self, state):
        return any(self._FUSION.fullmatch(key) for key in state)


TIMM_REPGHOSTNET = TimmRepGhostNetLayout()
