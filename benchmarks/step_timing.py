"""Side-by-side step timing shared by the benchmark scripts."""

import time

from absl import flags


def define_choice_list(name, default, choices, help_text):
    """A comma-separated list flag whose values must all be `choices`
    (a one-line usage error otherwise)."""
    flags.DEFINE_list(name, default, f"{help_text} ({', '.join(choices)})")
    flags.register_validator(
        name,
        lambda values: values and set(values) <= set(choices),
        message=f"--{name}: one or more of {', '.join(choices)}",
    )


class RunnerDied(RuntimeError):
    """A model trained in another process lost that process."""


def alternating_step_times(models, batch, warmup, windows, steps, died=None):
    """Seconds per `train_on_batch(*batch)` step, `{name: [per window]}`.

    Each model first takes `warmup` untimed steps; then the timed windows of
    `steps` steps alternate between the models, so drift in machine load hits
    all of them alike. A model with `time_steps(steps)` (a trainer in
    another process) times its own window. With a `died` dict, a model
    raising `RunnerDied` leaves the race and its message goes there.
    """
    models = dict(models)

    def run(name, action):
        try:
            return action(models[name])
        except RunnerDied as error:
            if died is None:
                raise
            died[name] = str(error)
            del models[name]

    def warm(model):
        for _ in range(warmup):
            model.train_on_batch(*batch)

    def window(model):
        if hasattr(model, "time_steps"):
            return model.time_steps(steps) / steps
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(*batch)
        return (time.perf_counter() - start) / steps

    for name in list(models):
        run(name, warm)
    seconds = {name: [] for name in models}
    for _ in range(windows):
        for name in list(models):
            value = run(name, window)
            if name in models:
                seconds[name].append(value)
    return {name: seconds[name] for name in models}


class Clock:
    """Seconds left of a run's time budget, and the work skipped for want
    of them (named, so that a report can say what it did not measure)."""

    def __init__(self, seconds):
        self.end = time.monotonic() + seconds
        self.skipped = []

    def allows(self, seconds, what):
        """Whether `seconds` are left for `what`; else it is skipped."""
        if self.end - time.monotonic() >= seconds:
            return True
        self.skipped.append(what)
        print(f"skipped for time: {what}", flush=True)
        return False


def largest_batch(fits, start, limit, refine, clock, what):
    """`(largest batch that fits, smallest that does not or None)`.

    Doubles from `start` while `fits(batch)` holds (halves while it does
    not, if `start` is too large), never above `limit`, then bisects
    `refine` times between the two; each try needs 30 s of `clock`.
    """
    good = bad = None
    batch = start
    while clock.allows(30, f"{what} at batch {batch}"):
        if fits(batch):
            good = batch
        else:
            bad = batch
        if bad is None:
            batch = batch * 2 if batch * 2 <= limit else None
        elif good is None:
            batch = batch // 2 if batch > 1 else None
        else:
            batch = None
        if batch is None:
            break
    for _ in range(refine):
        if good is None or bad is None or bad - good <= 1:
            break
        middle = (good + bad) // 2
        if not clock.allows(30, f"{what} at batch {middle}"):
            break
        if fits(middle):
            good = middle
        else:
            bad = middle
    return good, bad


def synthetic_batch(batch, shape):
    """`batch` raw-pixel images of `shape` (uniform 0-255, float32) and
    labels of 10 classes, seeded: the batch every framework trains on."""
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, *shape)).astype(np.float32)
    return images, rng.integers(0, 10, batch)


def compiled_form(variant, form, shape, jit_compile="auto", precision=None):
    """A 10-class `variant` in `form`, compiled with the benchmarks' SGD rule
    (RepOptSGD, momentum 0.9, Nesterov, weight decay 4e-5).

    `form`: "repopt" (plain net with the Grad Mults of the hyper-search
    model's initial scales), "plain" (the same without mults) or "repvgg"
    (the multi-branch training form). `precision` "bfloat16" builds it
    under Keras's `mixed_bfloat16` policy (the global policy is left as it
    was). Imports Keras when called, so callers can set TF's environment
    first.
    """
    import keras

    if precision == "bfloat16":
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            return compiled_form(variant, form, shape, jit_compile)
        finally:
            keras.mixed_precision.set_global_policy(previous)

    from repopt_tf import RepOptSGD
    from repopt_tf import build_model
    from repopt_tf import grad_mults_for_model
    from repopt_tf.models import extract_scales

    model = build_model(
        variant, 10, shape, kind="repvgg" if form == "repvgg" else "plain"
    )
    mults = None
    if form == "repopt":
        hs = build_model(variant, 10, shape, kind="hs")
        mults = grad_mults_for_model(model, extract_scales(hs))
    model.compile(
        optimizer=RepOptSGD(
            0.01,
            momentum=0.9,
            nesterov=True,
            weight_decay=4e-5,
            grad_mults=mults,
        ),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model
