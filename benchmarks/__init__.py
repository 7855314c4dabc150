"""Side-by-side measurements; run each as `python -m benchmarks.NAME`
from the repository root (module docstrings say what they measure)."""
