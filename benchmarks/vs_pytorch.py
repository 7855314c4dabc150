"""Training speed side by side: this library vs a PyTorch implementation.

The same RepOpt-VGG variant, batch and input, trained four ways in one
process, with alternating timed windows after a warm-up:

- Keras RepOpt-VGG: `build_model(kind="plain")` + RepOptSGD with Grad Mults,
- Keras RepVGG: `build_model(kind="repvgg")` + the same SGD rule, no mults,
- PyTorch RepOpt-VGG: the plain net in torch (NCHW, as its users write it)
  + `torch.optim.SGD` with the gradients multiplied by the same Grad Mults
  before the step (the reference RepOptimizerSGD's rule: `g * M`, then
  coupled L2, momentum, Nesterov),
- PyTorch RepVGG: the 3x3 + 1x1 + identity form with the same SGD.

Prints img/s for all four (median, min, max over windows) and, per window,
the ratios Keras/PyTorch for each form and RepOpt/RepVGG in each framework.
Needs torch (`pip install '.[bench]'`); never needed by the tests.

    python benchmarks/vs_pytorch.py --model=repopt_vgg_s --batch=128
"""

import os
import statistics
import sys
from pathlib import Path

from absl import app
from absl import flags
from step_timing import alternating_step_times
from step_timing import compiled_form

flags.DEFINE_string("model", "repopt_vgg_s", "Variant (see list_models()).")
flags.DEFINE_integer("batch", 128, "Batch size.", lower_bound=1)
flags.DEFINE_integer("image_size", 32, "Input height and width.", lower_bound=8)
flags.DEFINE_integer(
    "steps", 10, "Training steps per timed window.", lower_bound=1
)
flags.DEFINE_integer("windows", 5, "Timed windows per form.", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Untimed steps per form.", lower_bound=1)
flags.DEFINE_integer(
    "threads",
    0,
    "Threads for both frameworks (0: their defaults).",
    lower_bound=0,
)
flags.DEFINE_bool(
    "channels_last", False, "PyTorch: channels_last memory format."
)
FLAGS = flags.FLAGS

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torch_model(torch, spec, form, num_classes=10):
    """RepOpt-VGG (`form="repopt"`) or its RepVGG form in torch, NCHW."""
    from torch import nn

    from repopt_tf.models.repopt_vgg import block_plan

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn = nn.BatchNorm2d(cout)
            self.branches = form == "repvgg"
            if self.branches:
                self.conv1x1 = nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
                self.bn1x1 = nn.BatchNorm2d(cout)
                self.identity = (
                    nn.BatchNorm2d(cout)
                    if cin == cout and stride == 1
                    else None
                )

        def forward(self, x):
            out = self.bn(self.conv(x))
            if self.branches:
                out = out + self.bn1x1(self.conv1x1(x))
                if self.identity is not None:
                    out = out + self.identity(x)
            return torch.relu(out)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            blocks = []
            for _, cin, cout, stride, _ in block_plan(spec, 3):
                blocks.append(Block(cin, cout, stride))
            self.blocks = nn.Sequential(*blocks)
            self.linear = nn.Linear(spec["widths"][-1], num_classes)
            self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

        def forward(self, x):
            x = self.blocks((x / 255.0 - self.mean) / self.std)
            return self.linear(x.mean(dim=(2, 3)))

    return Net()


class TorchTrainer:
    """`train_on_batch` for a torch model: forward, backward, mults, step."""

    def __init__(self, torch, model, images, labels, mults=None):
        self.torch = torch
        self.model = model.train()
        if FLAGS.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        self.images, self.labels = images, labels
        self.optimizer = torch.optim.SGD(
            model.parameters(),
            lr=0.01,
            momentum=0.9,
            nesterov=True,
            weight_decay=4e-5,
        )
        self.mults = mults or []
        self.loss = torch.nn.CrossEntropyLoss()

    def train_on_batch(self, *unused):
        del unused
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(self.model(self.images), self.labels).backward()
        with self.torch.no_grad():
            for parameter, mult in self.mults:
                parameter.grad.mul_(mult)
        self.optimizer.step()


def main(argv):
    del argv
    try:
        import torch
    except ImportError:
        sys.exit(
            "error: needs torch: pip install '.[bench]' (CPU wheel is enough)"
        )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    if FLAGS.threads:
        torch.set_num_threads(FLAGS.threads)
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    from repopt_tf.models import VARIANTS

    if FLAGS.model not in VARIANTS:
        raise app.UsageError(
            f"--model: {FLAGS.model!r} is not a RepOpt-VGG variant: "
            f"{', '.join(sorted(VARIANTS))}."
        )
    spec = VARIANTS[FLAGS.model]
    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (FLAGS.batch, *shape)).astype(np.float32)
    labels = rng.integers(0, 10, FLAGS.batch)
    keras_batch = (tf.constant(images), tf.one_hot(labels, 10))

    runners = {}
    for form in ("repopt", "repvgg"):
        model = compiled_form(FLAGS.model, form, shape)
        runners[f"keras_{form}"] = model
        net = torch_model(torch, spec, form)
        torch_mults = None
        if form == "repopt":
            convs = [b.conv.weight for b in net.blocks]
            torch_mults = [
                (w, torch.from_numpy(m.transpose(3, 2, 0, 1).copy()))
                for w, m in zip(convs, model.optimizer.grad_mults.values())
            ]
        runners[f"torch_{form}"] = TorchTrainer(
            torch,
            net,
            torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
            torch.from_numpy(labels),
            torch_mults,
        )
    seconds = alternating_step_times(
        runners, keras_batch, FLAGS.warmup, FLAGS.windows, FLAGS.steps
    )

    cpu = "unknown CPU"
    if Path("/proc/cpuinfo").exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        ]
        cpu = f"{names[0]} x{len(names)}" if names else cpu
    print(
        f"{FLAGS.model}, batch {FLAGS.batch}, {FLAGS.image_size}x"
        f"{FLAGS.image_size}x3, {FLAGS.windows} windows x {FLAGS.steps} steps; "
        f"{cpu}; TF {tf.__version__}, Keras {keras.__version__}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads"
        f"{', channels_last' if FLAGS.channels_last else ''})"
    )
    for name in runners:
        rates = sorted(FLAGS.batch / s for s in seconds[name])
        print(
            f"{name:>14}: {statistics.median(rates):8.1f} img/s "
            f"(min {rates[0]:.1f}, max {rates[-1]:.1f})"
        )

    def ratio(label, faster, slower):
        values = sorted(b / a for a, b in zip(seconds[faster], seconds[slower]))
        print(
            f"ratio {label}: median {statistics.median(values):.2f} "
            f"(min {values[0]:.2f}, max {values[-1]:.2f})"
        )

    ratio("Keras/PyTorch, RepOpt-VGG", "keras_repopt", "torch_repopt")
    ratio("Keras/PyTorch, RepVGG", "keras_repvgg", "torch_repvgg")
    ratio("RepOpt/RepVGG, Keras", "keras_repopt", "keras_repvgg")
    ratio("RepOpt/RepVGG, PyTorch", "torch_repopt", "torch_repvgg")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    app.run(main)
