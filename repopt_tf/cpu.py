"""What this machine's CPU is: its model name and the vector-ISA flags that
decide which kernels and precisions are fast (printed beside timings)."""

import functools
import platform

SPEED_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_int8",
    "amx_bf16",
)


@functools.cache
def _cpuinfo():
    try:
        with open("/proc/cpuinfo") as f:
            return f.read().splitlines()
    except OSError:
        return []


def cpu_name():
    """`Intel(R) Xeon(R) Processor x2`: model name and logical CPU count."""
    names = [
        line.split(":", 1)[1].strip()
        for line in _cpuinfo()
        if line.startswith("model name")
    ]
    if names:
        return f"{names[0]} x{len(names)}"
    return platform.processor() or platform.machine()


def cpu_flags():
    """The `SPEED_FLAGS` this CPU has, space-separated ("unknown" off
    Linux)."""
    found = next(
        (
            set(line.split(":", 1)[1].split())
            for line in _cpuinfo()
            if line.startswith("flags")
        ),
        None,
    )
    if found is None:
        return "unknown"
    return " ".join(flag for flag in SPEED_FLAGS if flag in found)


def native_bfloat16():
    """Whether the CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX),
    where `mixed_bfloat16` trains faster than float32; elsewhere bfloat16
    is emulated and slower."""
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags().split()))
