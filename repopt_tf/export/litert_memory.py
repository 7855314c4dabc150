"""Peak resident memory of LiteRT running a `.tflite` model, in a fresh
process that imports nothing but numpy and LiteRT (TensorFlow alone would
add hundreds of MB).

`litert_peak_rss(path, threads, xnnpack)` runs this file as a script: it
reads the process's peak RSS (`VmHWM`) once LiteRT is imported (the idle
process), then loads the model from its path (memory-mapped, as an app
would), allocates, invokes 3 times on zeros and reads the peak again. The
difference is what the model costs a device process: arena, packed
weights (XNNPACK repacks them), the mapped file's touched pages.
"""

import json
import signal
import subprocess
import sys


def _peak_rss_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status (not Linux?)")


def litert_peak_rss(path, threads=1, xnnpack=True):
    """`{"idle_bytes", "peak_bytes", "model_bytes"}` for LiteRT on `path`.

    Raises:
        OSError: the probe failed (its last line of stderr is given).
    """
    child = subprocess.run(
        [sys.executable, __file__, str(path), str(threads), str(int(xnnpack))],
        capture_output=True,
        text=True,
    )
    if child.returncode < 0:
        raise OSError(
            f"it kills the process ({signal.Signals(-child.returncode).name}) "
            "preparing the model: a kernel refused its parameters (seen "
            "with near-zero activation scales, as an untrained network has)"
        )
    if child.returncode:
        last = child.stderr.strip().splitlines()[-1:] or ["no message"]
        raise OSError(f"LiteRT memory probe failed: {last[0]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def _probe(path, threads, xnnpack):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.interpreter import OpResolverType

    idle = _peak_rss_bytes()
    interpreter = Interpreter(
        model_path=path,
        num_threads=threads,
        experimental_op_resolver_type=OpResolverType.AUTO
        if xnnpack
        else OpResolverType.BUILTIN_REF,
    )
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    zeros = np.zeros(detail["shape"], detail["dtype"])
    for _ in range(3):
        interpreter.set_tensor(detail["index"], zeros)
        interpreter.invoke()
    peak = _peak_rss_bytes()
    print(
        json.dumps(
            {"idle_bytes": idle, "peak_bytes": peak, "model_bytes": peak - idle}
        )
    )


if __name__ == "__main__":
    _probe(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1")
