"""State-dict files, whatever wrote them: `read_state_dict` picks the
reader by suffix (`.safetensors`: `safetensors_file`; `.pth` and the other
`TORCH_SUFFIXES`: `torch_file`) and returns `{key: np.ndarray}`."""

from repopt_tf.checkpoints.safetensors_file import read_safetensors
from repopt_tf.checkpoints.torch_file import read_torch_file
from repopt_tf.checkpoints.torch_file import state_dict_from_checkpoint

TORCH_SUFFIXES = (".pth", ".pt", ".pth.tar", ".ckpt")
SAFETENSORS_SUFFIXES = (".safetensors",)
STATE_DICT_SUFFIXES = TORCH_SUFFIXES + SAFETENSORS_SUFFIXES


def is_state_dict_file(path):
    """Whether `path` is named like a PyTorch or safetensors weights file."""
    return str(path).lower().endswith(STATE_DICT_SUFFIXES)


def read_state_dict(path, ema=False):
    """The model's tensors in a `.pth` checkpoint (its `ema` ones with
    `ema`; see `state_dict_from_checkpoint`) or a `.safetensors` file."""
    if str(path).lower().endswith(SAFETENSORS_SUFFIXES):
        if ema:
            raise ValueError(
                f"{path}: a safetensors file holds one set of weights; ema "
                "applies to .pth training checkpoints (timm publishes EMA "
                "weights as their own file)."
            )
        return state_dict_from_checkpoint(
            read_safetensors(path), False, str(path)
        )
    return state_dict_from_checkpoint(read_torch_file(path), ema, str(path))
