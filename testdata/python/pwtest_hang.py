"""A module whose import never finishes: resolving a target in it must still be interruptible."""

while True:
    pass
