"""The one Markdown table writer the reports and benchmarks share."""

import doctest

from repopt_tf import markdown
from repopt_tf.markdown import table


def test_table_writes_header_rule_and_rows():
    lines = table(
        ["model", "top-1", "vs"], [["plain", 0.9123, ""], ["x", 1, 2]]
    )
    assert lines == [
        "| model | top-1 | vs |",
        "| --- | --- | --- |",
        "| plain | 0.9123 | |",
        "| x | 1 | 2 |",
    ]


def test_a_row_may_be_shorter_than_the_header():
    # rpg_dof_sweep's "free (no ring)" row spans fewer columns.
    assert table(["a", "b", "c"], [["free", "0.9"]])[-1] == "| free | 0.9 |"


def test_a_row_alone_is_the_line_a_table_would_hold():
    from repopt_tf.markdown import table_row

    assert (
        table_row(["full", "1.5", ""])
        == table(["a", "b", "c"], [["full", "1.5", ""]])[2]
    )


def test_rows_may_be_any_iterable():
    rows = (str(n) for n in range(2))
    assert table(["n"], ([r] for r in rows))[2:] == ["| 0 |", "| 1 |"]


def test_the_docstring_example_runs():
    assert doctest.testmod(markdown).failed == 0
