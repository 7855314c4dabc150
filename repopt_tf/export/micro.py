"""Running a `.tflite` model in TFLite Micro (the optional `[micro]` extra).

`tflite-micro` is TFLM itself, the runtime of microcontrollers, built for
this host: a 64-bit build, so the arena's persistent part (the tail:
tensor and node structs, pointers) is larger than on a 32-bit MCU; the
planned activations (the head) are the same. Everything TFLM says goes to
the process's stderr from C++; it is captured here, so that a missing
kernel becomes one line naming the op (`MicroError`) instead of Python's
"TFLM failed to allocate tensors".
"""

import contextlib
import os
import re
import signal
import sys
import tempfile

import numpy as np

INSTALL_HINT = (
    "pip install 'repopt-tf[micro]' (or, in this repository, "
    "bash scripts/setup_micro.sh)"
)


class MicroError(RuntimeError):
    """TFLM cannot load or run the model; the message says why."""


def micro_available():
    """Whether the `tflite_micro` package imports."""
    try:
        import tflite_micro  # noqa: F401
    except ImportError:
        return False
    return True


def micro_version():
    import tflite_micro

    return tflite_micro.__version__


@contextlib.contextmanager
def _captured_stderr(lines):
    """Collects what C++ and Python write to fd 2 into `lines`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(
                line.strip()
                for line in sink.read().decode(errors="replace").splitlines()
                if line.strip()
            )


def _reason(lines, error):
    """One line from TFLM's log: the missing op when there is one."""
    text = "\n".join(lines)
    missing = re.search(r"Didn't find op for builtin opcode '([^']+)'", text)
    if missing:
        return f"TFLM has no kernel for op {missing.group(1)}"
    custom = re.search(r"Didn't find op for custom opcode '([^']+)'", text)
    if custom:
        return f"TFLM has no kernel for custom op {custom.group(1)}"
    said = "; ".join(lines[:3])
    return f"TFLM: {error}" + (f" ({said})" if said else "")


def load(content, arena_bytes, preserve_all_tensors=False):
    """A TFLM interpreter over `content` with an arena of `arena_bytes`.

    Raises:
        MicroError: TFLM could not allocate (a missing kernel is named).
    """
    from tflite_micro import runtime

    config = (
        runtime.InterpreterConfig.kPreserveAllTensors
        if preserve_all_tensors
        else runtime.InterpreterConfig.kAllocationRecording
    )
    lines = []
    try:
        with _captured_stderr(lines):
            return runtime.Interpreter.from_bytes(
                bytes(content),
                arena_size=int(arena_bytes),
                intrepreter_config=config,
            )
    except (RuntimeError, ValueError) as error:
        raise MicroError(_reason(lines, error)) from None


def allocations(interpreter):
    """`{"total_bytes", "head_bytes", "tail_bytes"}` as TFLM's recording
    allocator reports them (head: planned non-persistent memory; tail:
    persistent structs and buffers)."""
    lines = []
    with _captured_stderr(lines):
        interpreter.print_allocations()
    found = {}
    for line in lines:
        match = re.search(
            r"Arena allocation (total|head|tail) (\d+) bytes", line
        )
        if match:
            found[f"{match.group(1)}_bytes"] = int(match.group(2))
    if set(found) != {"total_bytes", "head_bytes", "tail_bytes"}:
        raise MicroError(f"TFLM printed no arena usage: {lines[:3]}")
    return found


def _fits(content, arena_bytes):
    """Loads and invokes once in an arena of `arena_bytes`."""
    try:
        interpreter = load(content, arena_bytes)
    except MicroError as error:
        if "no kernel" in str(error):
            raise
        return False
    shape = interpreter.get_input_details(0)["shape"]
    interpreter.set_input(np.zeros(shape, np.int8), 0)
    interpreter.invoke()
    return True


def _probe(content, low, high, start):
    """Child process: bisects between `low` (fails) and `high` (fits, or 0:
    unknown, doubled up from `start`), printing `try N` before and
    `fits N` / `fails N` after each load, `missing MESSAGE` when TFLM lacks
    a kernel and `used TOTAL HEAD TAIL` once."""

    def fits(size):
        print(f"try {size}", flush=True)
        ok = _fits(content, size)
        print(f"{'fits' if ok else 'fails'} {size}", flush=True)
        return ok

    try:
        if not high:
            high = max(start, 2 * low, 1)
            while not fits(high):
                low, high = high, high * 2
                if high > 1 << 32:
                    print("missing TFLM did not fit the model in 4 GiB")
                    return
        used = allocations(load(content, high))
        print("used {total_bytes} {head_bytes} {tail_bytes}".format(**used))
        total = used["total_bytes"]  # often the answer, or close: try it first
        for size in (total, total - 1):
            if low < size < high:
                if fits(size):
                    high = size
                else:
                    low = size
        while high - low > 1:
            middle = (low + high) // 2
            if fits(middle):
                high = middle
            else:
                low = middle
    except MicroError as error:
        print(f"missing {error}", flush=True)


def smallest_arena(path, start_bytes, log=None):
    """The smallest arena in which TFLM loads and runs the model at `path`
    (one byte less fails), by bisection from `start_bytes` up.

    TFLM can crash instead of failing when an arena is too small, so the
    loads run in child processes; a crash counts as "does not fit" and the
    search goes on in a new child. Returns `{"arena_bytes", "total_bytes",
    "head_bytes", "tail_bytes", "crashed_sizes"}`: total, head and tail as
    TFLM's recording allocator reports them once allocated (its planner
    needs more than `total` while it plans).

    Raises:
        MicroError: TFLM has no kernel for an op (named), or nothing fits.
    """
    import subprocess

    low, high, used, crashed = 0, 0, None, []
    for _ in range(64):
        child = subprocess.run(
            [sys.executable, __file__, str(path), str(low), str(high)]
            + [str(int(start_bytes))],
            capture_output=True,
            text=True,
        )
        tried = None
        for line in child.stdout.splitlines():
            word, _, rest = line.partition(" ")
            if word == "missing":
                raise MicroError(rest)
            if word == "try":
                tried = int(rest)
            elif word == "fits":
                high, tried = int(rest), None
            elif word == "fails":
                low, tried = int(rest), None
            elif word == "used":
                used = dict(
                    zip(
                        ("total_bytes", "head_bytes", "tail_bytes"),
                        map(int, rest.split()),
                    )
                )
        if child.returncode == 0 and used and high - low == 1:
            return {"arena_bytes": high, **used, "crashed_sizes": crashed}
        if child.returncode == -signal.SIGABRT:
            raise MicroError(
                "TFLM aborts (SIGABRT) preparing the model: a kernel refused "
                "its parameters (seen with near-zero activation scales, as an "
                "untrained network has)"
            )
        if tried is None:
            last = child.stderr.strip().splitlines()[-1:]
            raise MicroError(
                f"the TFLM probe failed (exit {child.returncode}): {last}"
            )
        crashed.append(tried)  # the child died loading `tried` bytes
        low = max(low, tried)
        if log:
            log(f"TFLM crashed in a {tried:,}-byte arena (counted too small)")
    raise MicroError("the TFLM arena search did not converge")


def run(interpreter, images, batch=1):
    """Raw int8 outputs (output 0) for int8 `images`, one invoke per
    `batch` images (a fixed-batch model's; the last chunk padded)."""
    outputs = []
    for chunk in padded_chunks(images, batch):
        interpreter.set_input(chunk, 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0)).reshape(batch, -1))
    return np.concatenate(outputs)[: len(images)]


def padded_chunks(images, batch):
    """`images` in chunks of `batch`, the last one padded with zeros."""
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        if len(chunk) < batch:
            fill = np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)
            chunk = np.concatenate([chunk, fill])
        yield chunk


def tensor(interpreter, index):
    """A tensor of a `preserve_all_tensors` interpreter, as an array."""
    detail = interpreter.GetTensor(index, 0)
    return np.asarray(detail["tensor_data"]).reshape(-1)


if __name__ == "__main__":  # the child process of `smallest_arena`
    _model, _low, _high, _start = sys.argv[1:5]
    with open(_model, "rb") as _file:
        _probe(_file.read(), int(_low), int(_high), int(_start))
