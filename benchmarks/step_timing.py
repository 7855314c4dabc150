"""Side-by-side step timing shared by the benchmark scripts."""

import time


def alternating_step_times(models, batch, warmup, windows, steps):
    """Seconds per `train_on_batch(*batch)` step, `{name: [per window]}`.

    Each model first takes `warmup` untimed steps; then the timed windows of
    `steps` steps alternate between the models, so drift in machine load hits
    all of them alike.
    """
    for model in models.values():
        for _ in range(warmup):
            model.train_on_batch(*batch)
    seconds = {name: [] for name in models}
    for _ in range(windows):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(*batch)
            seconds[name].append((time.perf_counter() - start) / steps)
    return seconds


def compiled_form(variant, form, shape, jit_compile="auto"):
    """A 10-class `variant` in `form`, compiled with the benchmarks' SGD rule
    (RepOptSGD, momentum 0.9, Nesterov, weight decay 4e-5).

    `form`: "repopt" (plain net with the Grad Mults of the hyper-search
    model's initial scales), "plain" (the same without mults) or "repvgg"
    (the multi-branch training form). Imports Keras when called, so callers
    can set TF's environment first.
    """
    import keras

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
