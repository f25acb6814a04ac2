"""A module pwtest imports: exceptions raised here must show this file in tracebacks."""


def fail_deep(n):
    if n == 0:
        raise LookupError("raised inside an imported module")
    return fail_deep(n - 1)
