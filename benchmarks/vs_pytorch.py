"""Training speed, best setting against best setting: this library vs PyTorch.

The same RepOpt-VGG variant, batch and input, trained in one process with
alternating timed windows after a warm-up, every framework at each of its
settings:

- Keras RepOpt-VGG: `build_model(kind="plain")` + RepOptSGD with Grad Mults,
  and Keras RepVGG: `build_model(kind="repvgg")` + the same SGD rule, each
  at every `--precisions` (float32; `bfloat16` = Keras's `mixed_bfloat16`),
  TF at `--tf_threads` (a process setting: run once per value);
- PyTorch RepOpt-VGG and RepVGG: with `--reference=CHECKOUT` the authors'
  own code (DingXiaoH/RepOptimizers: `RepOptVGG` in modes target and repvgg,
  `RepOptimizerSGD` with the same Grad Mults), else nets written here with
  `torch.optim.SGD` and the mults applied to the gradients (the same rule),
  NCHW (and `--channels_last`), at every precision (`bfloat16`:
  `torch.autocast("cpu", torch.bfloat16)`) and `--torch_threads` count.

Prints img/s for every setting (median, min, max over windows), the best
setting of each framework and form, and the ratios best Keras / best
PyTorch per form, float32 against float32, and RepOpt / RepVGG per
framework at its best, with the CPU model and flags. Needs torch
(`pip install '.[bench]'`); never needed by the tests.

    python benchmarks/vs_pytorch.py --model=repopt_vgg_s --batch=128
    python benchmarks/vs_pytorch.py --model=repopt_vgg_a0 --image_size=224 --batch=32 \
        --reference=/path/to/RepOptimizers --steps=2 --windows=3
"""

import contextlib
import io
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
    "tf_threads", 0, "TensorFlow's threads (0: its default).", lower_bound=0
)
flags.DEFINE_list(
    "torch_threads", ["0"], "PyTorch thread counts to race (0: its default)."
)
flags.DEFINE_list(
    "precisions", ["float32", "bfloat16"], "float32 and/or bfloat16."
)
flags.DEFINE_string(
    "reference",
    None,
    "A DingXiaoH/RepOptimizers checkout: race its model and optimizer code.",
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


def reference_model(torch, spec, form, num_classes=10):
    """The authors' `RepOptVGG` (mode target or repvgg) at `spec`'s shape,
    behind our raw-pixel normalisation."""
    sys.path[:0] = [
        FLAGS.reference,
        str(Path(FLAGS.reference) / "repoptimizer"),
    ]
    from repoptvgg_model import RepOptVGG

    widths = [w / base for w, base in zip(spec["widths"], (64, 128, 256, 512))]
    net = RepOptVGG(
        list(spec["blocks"]),
        num_classes,
        widths,
        mode="target" if form == "repopt" else "repvgg",
    )

    class Normalised(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

        def forward(self, x):
            return self.net((x / 255.0 - self.mean) / self.std)

    return Normalised()


class TorchTrainer:
    """`train_on_batch` for a torch model: forward (under bf16 autocast for
    `precision="bfloat16"`), backward, Grad Mults, step, with `threads`."""

    def __init__(self, torch, model, images, labels, mults, precision, threads):
        self.torch, self.threads = torch, threads
        self.model = model.train()
        if FLAGS.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        self.images, self.labels = images, labels
        settings = dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=4e-5)
        self.mults = mults or []
        if FLAGS.reference:  # the authors' optimizer applies the mults
            from repoptimizer_sgd import RepOptimizerSGD

            with contextlib.redirect_stdout(io.StringIO()):  # its banner
                self.optimizer = RepOptimizerSGD(
                    dict(self.mults), model.parameters(), **settings
                )
            self.mults = []
        else:
            self.optimizer = torch.optim.SGD(model.parameters(), **settings)
        self.autocast = precision == "bfloat16"
        self.loss = torch.nn.CrossEntropyLoss()

    def train_on_batch(self, *unused):
        del unused
        torch = self.torch
        torch.set_num_threads(self.threads)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            loss = self.loss(self.model(self.images), self.labels)
        loss.backward()
        with torch.no_grad():
            for parameter, mult in self.mults:
                parameter.grad.mul_(mult)
        self.optimizer.step()


def _torch_convs(torch, net):
    """The block 3x3 kernels in model order (ours: `blocks`; the authors'
    target model: each block's `conv`)."""
    return [
        module.weight
        for name, module in net.named_modules()
        if isinstance(module, torch.nn.Conv2d)
        and module.kernel_size == (3, 3)
        and not name.endswith("conv_3x3")
    ]


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

    if FLAGS.tf_threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.tf_threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.tf_threads)
    from repopt_tf.models import VARIANTS

    if FLAGS.model not in VARIANTS:
        raise app.UsageError(
            f"--model: {FLAGS.model!r} is not a RepOpt-VGG variant: "
            f"{', '.join(sorted(VARIANTS))}."
        )
    unknown = set(FLAGS.precisions) - {"float32", "bfloat16"}
    if unknown or not FLAGS.precisions:
        raise app.UsageError(
            f"--precisions: float32 and/or bfloat16, got {unknown}."
        )
    default_threads = torch.get_num_threads()
    torch_threads = [int(t) or default_threads for t in FLAGS.torch_threads]
    spec = VARIANTS[FLAGS.model]
    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (FLAGS.batch, *shape)).astype(np.float32)
    labels = rng.integers(0, 10, FLAGS.batch)
    keras_batch = (tf.constant(images), tf.one_hot(labels, 10))
    torch_images = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    build_torch = reference_model if FLAGS.reference else torch_model

    runners = {}
    for precision in FLAGS.precisions:
        keras.mixed_precision.set_global_policy(
            "mixed_bfloat16" if precision == "bfloat16" else "float32"
        )
        for form in ("repopt", "repvgg"):
            model = compiled_form(FLAGS.model, form, shape)
            runners[f"keras_{form}_{precision}"] = model
            mults = None
            if form == "repopt":
                mults = [
                    m.transpose(3, 2, 0, 1).copy()
                    for m in model.optimizer.grad_mults.values()
                ]
            for threads in torch_threads:
                torch.manual_seed(0)
                net = build_torch(torch, spec, form)
                pairs = None
                if mults is not None:
                    pairs = [
                        (w, torch.from_numpy(m))
                        for w, m in zip(_torch_convs(torch, net), mults)
                    ]
                runners[f"torch_{form}_{precision}_t{threads}"] = TorchTrainer(
                    torch,
                    net,
                    torch_images,
                    torch.from_numpy(labels),
                    pairs,
                    precision,
                    threads,
                )
    keras.mixed_precision.set_global_policy("float32")
    seconds = alternating_step_times(
        runners, keras_batch, FLAGS.warmup, FLAGS.windows, FLAGS.steps
    )
    report(seconds, tf, keras, torch)


def report(seconds, tf, keras, torch):
    cpu, cpu_flags = "unknown CPU", ""
    if Path("/proc/cpuinfo").exists():
        text = open("/proc/cpuinfo").read().splitlines()
        names = [
            line.split(":", 1)[1].strip()
            for line in text
            if line.startswith("model name")
        ]
        cpu = f"{names[0]} x{len(names)}" if names else cpu
        found = next(
            (
                line.split(":", 1)[1].split()
                for line in text
                if line.startswith("flags")
            ),
            [],
        )
        cpu_flags = " ".join(
            f
            for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8")
            if f in found
        )
    print(
        f"{FLAGS.model}, batch {FLAGS.batch}, {FLAGS.image_size}x"
        f"{FLAGS.image_size}x3, {FLAGS.windows} windows x {FLAGS.steps} steps; "
        f"{cpu} ({cpu_flags}); TF {tf.__version__} ({FLAGS.tf_threads or 'default'} "
        f"threads), Keras {keras.__version__}, torch {torch.__version__}"
        f"{', channels_last' if FLAGS.channels_last else ''}; PyTorch side: "
        f"{'the authors code' if FLAGS.reference else 'written here'}"
    )
    print("| setting | img/s median | min | max |")
    print("| --- | --- | --- | --- |")
    for name in seconds:
        rates = sorted(FLAGS.batch / s for s in seconds[name])
        print(
            f"| {name} | {statistics.median(rates):.1f} | {rates[0]:.1f} | "
            f"{rates[-1]:.1f} |"
        )

    def best(prefix):
        return min(
            (n for n in seconds if n.startswith(prefix)),
            key=lambda n: statistics.median(seconds[n]),
        )

    def ratio(label, faster, slower):
        values = sorted(b / a for a, b in zip(seconds[faster], seconds[slower]))
        print(
            f"ratio {label} ({faster} vs {slower}): median "
            f"{statistics.median(values):.2f} (min {values[0]:.2f}, max "
            f"{values[-1]:.2f})"
        )

    for form, label in (("repopt", "RepOpt-VGG"), ("repvgg", "RepVGG")):
        ratio(
            f"Keras/PyTorch, {label}, best",
            best(f"keras_{form}"),
            best(f"torch_{form}"),
        )
        if "float32" in FLAGS.precisions:
            ratio(
                f"Keras/PyTorch, {label}, float32",
                best(f"keras_{form}_float32"),
                best(f"torch_{form}_float32"),
            )
    ratio(
        "RepOpt/RepVGG, Keras, best", best("keras_repopt"), best("keras_repvgg")
    )
    ratio(
        "RepOpt/RepVGG, PyTorch, best",
        best("torch_repopt"),
        best("torch_repvgg"),
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    app.run(main)
