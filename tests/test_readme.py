"""Every Python snippet in README.md and on the docs/ pages runs as it
stands (in a fresh process), unless an HTML comment right above it says why
not."""

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
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SNIPPETS = [
    (f"{page.relative_to(ROOT)}#{number}", m.group("code"), m.group("reason"))
    for page in PAGES
    for number, m in enumerate(BLOCK.finditer(page.read_text()))
]


def test_docs_have_snippets_and_few_skips():
    assert len(SNIPPETS) >= 9
    assert sum(reason is not None for *_, reason in SNIPPETS) <= 1
    assert any(where.startswith("README.md") for where, *_ in SNIPPETS)


@pytest.mark.parametrize(
    "index", range(len(SNIPPETS)), ids=[where for where, *_ in SNIPPETS]
)
def test_snippet_runs(index, tmp_path):
    _, code, reason = SNIPPETS[index]
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
    code = BLOCK.search((ROOT / "docs/own_network.md").read_text())
    code = code.group("code")
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


def test_the_config_table_lists_every_field_of_configs_base():
    """docs/training.md's table names each `configs/base.py` field once."""
    from repopt_tf.configs import config_fields

    named = []
    for line in (ROOT / "docs/training.md").read_text().splitlines():
        if line.startswith("| `"):
            named += re.findall(r"`([\w.]+)`", line.split("|")[1])
    assert sorted(named) == sorted(config_fields())


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text().splitlines()
    comment = next(line for line in readme if line.startswith("# 2."))
    command = readme[readme.index(comment) + 1]
    ci = (ROOT / ".ci/run").read_text().strip().splitlines()[-1]
    assert ci == command and "pytest" in command and "--strict" in command
