"""A module that fails while it is imported."""

raise RuntimeError("pwtest_broken cannot be imported")


def f():
    return 1
