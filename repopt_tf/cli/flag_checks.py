"""absl flag validators shared by the tools and the benchmarks: a bad value
stops the program with absl's one-line `flag --name=value: message` before
anything runs, never with a traceback."""

from absl import app
from absl import flags


def require_models(flag_name, value):
    """Raises `app.UsageError` unless `value` (a name, or a list of names)
    names `list_models()` models. Called from `main`, after any environment
    set-up, since it imports TensorFlow."""
    from repopt_tf.models import list_models

    known = list_models()
    names = [value] if isinstance(value, str) else list(value)
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise app.UsageError(
            f"--{flag_name}: unknown model(s) {', '.join(unknown) or '(none)'}"
            f"; known: {', '.join(known)}."
        )


def check_positive_integers(*names):
    """List flags whose every entry must be an integer >= 1."""
    for name in names:
        flags.register_validator(
            name,
            lambda values: (
                bool(values)
                and all(str(v).isdigit() and int(v) >= 1 for v in values)
            ),
            message="must be a comma-separated list of integers >= 1",
        )


def check_fractions(*names):
    """List flags whose every entry must be a number in (0, 1]."""

    def fraction(value):
        try:
            return 0 < float(value) <= 1
        except ValueError:
            return False

    for name in names:
        flags.register_validator(
            name,
            lambda values: bool(values) and all(fraction(v) for v in values),
            message="must be a comma-separated list of numbers in (0, 1]",
        )
