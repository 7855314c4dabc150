"""The PyTorch side of the training benchmarks (`vs_pytorch.py`,
`step_profile.py`): RepOpt-VGG and its RepVGG form, written here or the
authors' own code, each trained in a child process of its own (`TorchRunner`)
that never imports TensorFlow: torch 2.13's CPU build corrupts its heap
training RepVGG-A0 in channels_last float32 at 224x224 (`free(): invalid
size`, also without TF), and a crash must not take the race with it.
Needs torch (the `[bench]` extra) in those children only.
"""

import collections
import contextlib
import io
import multiprocessing
import sys
import time
from pathlib import Path

from benchmarks.step_timing import RunnerDied

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torch_model(torch, spec, plan, form, num_classes=10):
    """RepOpt-VGG (`form="repopt"`) or its RepVGG form in torch, NCHW, with
    the blocks of `plan` (`repopt_vgg.block_plan`'s tuples)."""
    from torch import nn

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
            for _, cin, cout, stride, _ in plan:
                blocks.append(Block(cin, cout, stride))
            self.blocks = nn.Sequential(*blocks)
            self.linear = nn.Linear(spec["widths"][-1], num_classes)
            self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

        def forward(self, x):
            x = self.blocks((x / 255.0 - self.mean) / self.std)
            return self.linear(x.mean(dim=(2, 3)))

    return Net()


def reference_model(torch, spec, form, checkout, num_classes=10):
    """The authors' `RepOptVGG` (mode target or repvgg) at `spec`'s shape,
    from a DingXiaoH/RepOptimizers `checkout`, behind our raw-pixel
    normalisation."""
    _import_reference(checkout)
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
    `precision="bfloat16"`), backward, Grad Mults (`mults`: (parameter,
    mult) pairs), step, with `threads`, in memory `layout` "nchw" or
    "channels_last", on `device` ("cpu" or "cuda"); the authors'
    `RepOptimizerSGD` applies the mults when a `reference` checkout is
    given, else they scale the gradients before `torch.optim.SGD` (the same
    rule)."""

    def __init__(
        self,
        torch,
        model,
        images,
        labels,
        mults,
        precision,
        threads,
        layout,
        reference=None,
        device="cpu",
    ):
        self.torch, self.threads, self.device = torch, threads, device
        self.layout = layout
        self.model = model.to(device).train()
        if layout == "channels_last":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.images, self.labels = self._batch(images, labels)
        settings = dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=4e-5)
        self.mults = [(p, m.to(device)) for p, m in mults or []]
        if reference:
            _import_reference(reference)
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

    def _batch(self, images, labels):
        images = images.to(self.device)
        if self.layout == "channels_last":
            images = images.contiguous(memory_format=self.torch.channels_last)
        return images, labels.to(self.device)

    def train_on_batch(self, images=None, labels=None):
        torch = self.torch
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        if images is None:
            images, labels = self.images, self.labels
        self.optimizer.zero_grad(set_to_none=True)
        device_type = torch.device(self.device).type
        with torch.autocast(
            device_type, dtype=torch.bfloat16, enabled=self.autocast
        ):
            loss = self.loss(self.model(images), labels)
        loss.backward()
        with torch.no_grad():
            for parameter, mult in self.mults:
                parameter.grad.mul_(mult)
        self.optimizer.step()

    def synchronize(self):
        """Waits for the device's queued work (a no-op on the CPU)."""
        if self.torch.device(self.device).type == "cuda":
            self.torch.cuda.synchronize()

    def fits(self, batch, steps=2):
        """Whether `steps` training steps at `batch` images (the trainer's
        images repeated) run without running out of device memory."""
        torch = self.torch
        repeats = -(-batch // len(self.images))
        images = self.images.repeat(repeats, 1, 1, 1)[:batch]
        labels = self.labels.repeat(repeats)[:batch]
        try:
            for _ in range(steps):
                self.train_on_batch(images, labels)
            self.synchronize()
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            del images, labels
            self.optimizer.zero_grad(set_to_none=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def mult_pairs(torch, net, mults):
    """(kernel, Grad Mult) pairs: `mults` (OIHW arrays, in model order) on
    `net`'s block 3x3 kernels (ours: `blocks`; the authors' target model:
    each block's `conv`)."""
    kernels = [
        module.weight
        for name, module in net.named_modules()
        if isinstance(module, torch.nn.Conv2d)
        and module.kernel_size == (3, 3)
        and not name.endswith("conv_3x3")
    ]
    return [(w, torch.from_numpy(m)) for w, m in zip(kernels, mults)]


def _oihw_mults(model):
    """The Keras RepOpt `model`'s Grad Mults (HWIO) as OIHW arrays."""
    return [
        m.transpose(3, 2, 0, 1).copy()
        for m in model.optimizer.grad_mults.values()
    ]


def check_reference(checkout):
    """None, or why `checkout` is not a DingXiaoH/RepOptimizers checkout."""
    if checkout is None:
        return None
    wanted = [
        Path(checkout) / "repoptimizer" / name
        for name in ("repoptvgg_model.py", "repoptimizer_sgd.py")
    ]
    missing = [str(path) for path in wanted if not path.is_file()]
    if missing:
        return (
            f"--reference={checkout} is not a RepOptimizers checkout "
            f"(no {', '.join(missing)})"
        )
    return None


def _import_reference(checkout):
    for path in (str(Path(checkout) / "repoptimizer"), str(checkout)):
        if path not in sys.path:
            sys.path.insert(0, path)


TORCH_RULES = (  # (name prefix, category), nearest ancestor first
    ("Optimizer.step", "optimizer"),
    ("aten::convolution_backward", "conv backward (input + kernel)"),
    ("aten::native_batch_norm_backward", "BatchNorm backward"),
    ("aten::batch_norm", "BatchNorm forward"),
    ("aten::threshold_backward", "ReLU forward + backward"),
    ("aten::relu", "ReLU forward + backward"),
    ("aten::convolution", "conv forward"),
    ("aten::_to_copy", "casts (bf16)"),
    ("aten::div", "preprocessing"),
    ("aten::sub", "preprocessing"),
)


def _category(event):
    """A torch profiler event's category: its own or its nearest
    ancestor's that `TORCH_RULES` names, else "other"."""
    while event is not None:
        for prefix, category in TORCH_RULES:
            if event.name.startswith(prefix):
                return category
        event = event.cpu_parent
    return "other"


def _profile(torch, trainer, steps):
    """{category: ms of op self time over `steps`}, and their wall seconds."""
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU]
    ) as profiler:
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_on_batch()
        wall = time.perf_counter() - start
    totals = collections.Counter()
    for event in profiler.events():
        totals[_category(event)] += event.self_cpu_time_total / 1e3
    return dict(totals), wall


def _serve(conn, path, settings):
    """The child: one torch trainer, driven over `conn`."""
    sys.path[:0] = path
    import torch

    trainer = _trainer(torch, **settings)
    conn.send((torch.__version__, trainer.threads))
    while True:
        command, steps = conn.recv()
        if command == "stop":
            return
        if command == "time":
            trainer.synchronize()
            start = time.perf_counter()
            for _ in range(steps):
                trainer.train_on_batch()
            trainer.synchronize()
            conn.send(time.perf_counter() - start)
        elif command == "fits":
            conn.send(trainer.fits(steps))
        elif command == "profile":
            conn.send(_profile(torch, trainer, steps))


def _trainer(
    torch, spec, plan, form, images, labels, mults, threads, reference, **rest
):
    torch.manual_seed(0)
    if reference:
        net = reference_model(torch, spec, form, reference)
    else:
        net = torch_model(torch, spec, plan, form)
    return TorchTrainer(
        torch,
        net,
        torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
        torch.from_numpy(labels),
        mult_pairs(torch, net, mults or []),
        threads=threads or torch.get_num_threads(),
        reference=reference,
        **rest,
    )


class TorchRunner:
    """One torch trainer in its own child process, for
    `step_timing.alternating_step_times`: `train_on_batch`, `time_steps`
    (timed in the child) and `profile`; a child that dies (torch itself
    crashed) raises `RunnerDied` and takes no other trainer with it.

    `variant` in `form` ("repopt": with the Grad Mults of the Keras
    `keras_model`) on `images` (NHWC, raw pixels) and `labels`; `rest`:
    `precision`, `threads` (0: torch's default), `layout`, `reference` (a
    checkout or None), `device`, as `TorchTrainer`. `version` and `threads`
    come from the child. A child that does not answer a call within
    `timeout` seconds (a hang: the authors' RepVGG in channels_last float32
    waits forever in a oneDNN barrier on a Zen 2 CPU at 2 threads) is
    killed and raises `RunnerDied` too.
    """

    def __init__(
        self, variant, form, keras_model, images, labels, timeout=300, **rest
    ):
        from repopt_tf.models import VARIANTS
        from repopt_tf.models.repopt_vgg import block_plan

        spec = VARIANTS[variant]
        settings = dict(
            spec=dict(spec),
            plan=list(block_plan(spec, 3)),
            form=form,
            images=images,
            labels=labels,
            mults=_oihw_mults(keras_model) if form == "repopt" else None,
            **rest,
        )
        self.timeout = timeout
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        here = str(Path(__file__).resolve().parent)
        self._process = context.Process(
            target=_serve,
            args=(child, [here, *sys.path], settings),
            daemon=True,
        )
        self._process.start()
        child.close()
        self.version, self.threads = self._receive()

    def _receive(self):
        try:
            if not self._conn.poll(self.timeout):
                self._process.kill()
                self._process.join(timeout=10)
                raise RunnerDied(
                    f"hung: the torch process gave no answer in "
                    f"{self.timeout:g} s and was killed"
                )
            return self._conn.recv()
        except (EOFError, ConnectionError):
            self._process.join(timeout=10)
            raise RunnerDied(
                "crashed: the torch process died (exit code "
                f"{self._process.exitcode})"
            ) from None

    def _call(self, command, steps):
        self._conn.send((command, steps))
        return self._receive()

    def train_on_batch(self, *unused):
        self._call("time", 1)

    def time_steps(self, steps):
        return self._call("time", steps)

    def profile(self, steps):
        """({category: op self ms}, wall seconds) over `steps` steps."""
        return self._call("profile", steps)

    def fits(self, batch):
        """Whether training at `batch` images fits in device memory."""
        return self._call("fits", batch)

    def close(self):
        with contextlib.suppress(OSError, EOFError):
            self._conn.send(("stop", 0))
        self._process.join(timeout=30)


def start_runner(failures, name, *args, **kwargs):
    """`TorchRunner(*args, **kwargs)`, or None, with why recorded as
    `failures[name]`, when its process dies or hangs while starting."""
    try:
        return TorchRunner(*args, **kwargs)
    except RunnerDied as error:
        failures[name] = str(error)
        return None
