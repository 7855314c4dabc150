"""The top tier of the public API (`repopt_tf.__all__`) documents itself:
every name has the rule, Args, Returns, Raises, a runnable Example and
References with links, and its Example runs here (doctest)."""

import doctest
import inspect
import re

import pytest

import repopt_tf

SECTIONS = ("Returns:", "Examples:", "References:")


def test_the_top_tier_is_the_documented_cut():
    assert len(repopt_tf.__all__) == 16
    for name in repopt_tf.__all__:
        assert getattr(repopt_tf, name).__name__ == name


@pytest.mark.parametrize("name", repopt_tf.__all__)
def test_each_name_has_every_section(name):
    obj = getattr(repopt_tf, name)
    doc = inspect.getdoc(obj)
    missing = [s for s in SECTIONS if s not in doc]
    assert not missing, f"{name} lacks {missing}"
    takes_arguments = any(
        p.name not in ("self", "kwargs")
        for p in inspect.signature(obj).parameters.values()
    )
    assert ("Args:" in doc) == takes_arguments, name
    references = doc.split("References:")[1]
    assert re.search(r"https://\S+", references), name
    assert len(doc.split("\n\n")[0]) > 20  # a one-line rule first


@pytest.mark.parametrize("name", repopt_tf.__all__)
def test_each_example_runs(name):
    obj = getattr(repopt_tf, name)
    module = inspect.getmodule(obj)
    finder = doctest.DocTestFinder(recurse=False)
    (test,) = finder.find(obj, name, module=module, globs={})
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    result = runner.run(test)
    assert result.attempted >= 2 and result.failed == 0, name
