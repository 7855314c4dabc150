"""Every Python snippet in README.md runs as it stands (in a fresh process),
unless an HTML comment right above it says why not."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The authors' scale files, as a user who downloaded them has them.
OFFICIAL = ROOT.parent / "shared/data/official_scales"
BLOCK = re.compile(
    r"(<!-- readme-test: skip \((?P<reason>[^)]+)\) -->\n)?"
    r"```python\n(?P<code>.*?)```",
    re.S,
)
SNIPPETS = [
    (m.group("code"), m.group("reason"))
    for m in BLOCK.finditer((ROOT / "README.md").read_text())
]


def test_readme_has_snippets_and_few_skips():
    assert len(SNIPPETS) >= 6
    assert sum(reason is not None for _, reason in SNIPPETS) <= 1


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs(index, tmp_path):
    code, reason = SNIPPETS[index]
    if reason:
        pytest.skip(reason)
    for path in OFFICIAL.glob("*.pth"):
        (tmp_path / path.name).symlink_to(path)
    if "-scales.pth" in code and not OFFICIAL.is_dir():
        pytest.skip("the authors' scale files are not beside the checkout")
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, (code[:300], result.stderr[-3000:])


def test_own_network_snippet_builds_mults():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## RepOpt on your own network") :]
    code = BLOCK.search(section).group("code")
    code += (
        "\nprint('mults', len(grad_mults_for_model(model, scales, pattern)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mults 3" in result.stdout
