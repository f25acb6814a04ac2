"""Called by path (testdata/python/scriptfile.py:area) rather than by module name."""

import pwtest_other  # a sibling module: the file's folder is on sys.path


def area(w, h):
    return w * h
