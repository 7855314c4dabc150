"""train.py's progress lines: `[repopt] message`, flushed."""


def log(message):
    print(f"[repopt] {message}", flush=True)
