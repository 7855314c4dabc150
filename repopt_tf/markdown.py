"""Markdown tables: the one way the library's reports and benchmarks write
them."""


def table(header, rows):
    """The lines of a Markdown table.

    Args:
      header: the column names.
      rows: an iterable of rows, each a sequence of cells (any value; `str()`
        of it is written, an empty cell as `| |`).

    Returns:
      A list of strings: the header line, the `| --- |` line, one per row.

    Example:
      >>> from repopt_tf.markdown import table
      >>> print("\\n".join(table(["model", "top-1"], [["plain", 0.9], ["x", ""]])))
      | model | top-1 |
      | --- | --- |
      | plain | 0.9 |
      | x | |
    """
    return [
        table_row(header),
        table_row(["---"] * len(header)),
        *(table_row(row) for row in rows),
    ]


def table_row(cells):
    """One line of a Markdown table (`table`'s rows; for printing a row as it
    is measured)."""
    return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"
