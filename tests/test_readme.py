"""README snippets that a user copies run as they stand."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python_block_after(heading):
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_own_network_snippet_runs(tmp_path):
    code = _python_block_after("## RepOpt on your own network")
    code += "\nprint('mults', len(grad_mults_for_model(model, scales, pattern)))\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mults 3" in result.stdout
