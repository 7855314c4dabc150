"""Scale files: read official `.pth` (no torch), save/load `.npz`, presets."""

from repopt_tf.models.repopt_vgg.scale_transfer import transfer_scales
from repopt_tf.scales.scale_files import list_presets
from repopt_tf.scales.scale_files import load_scales
from repopt_tf.scales.scale_files import load_scales_metadata
from repopt_tf.scales.scale_files import save_scales
from repopt_tf.scales.scale_files import scales_from_state_dict

__all__ = [
    "list_presets",
    "load_scales",
    "load_scales_metadata",
    "save_scales",
    "scales_from_state_dict",
    "transfer_scales",
]
