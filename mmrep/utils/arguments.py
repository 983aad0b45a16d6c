"""Predicates for the integer arguments of mmrep's layers (widths, counts, cluster numbers).

A width must be a Python int: not a bool (which is an int subclass, so `True` would pass as
1) and not a NumPy integer (which `get_config` could not write as JSON).
"""


def is_int_at_least(value, minimum):
    """Whether `value` is an int (not a bool) of at least `minimum`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def is_positive_int(value):
    """Whether `value` is an int (not a bool) greater than zero, as a width or count must be."""
    return is_int_at_least(value, 1)
