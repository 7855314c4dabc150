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
