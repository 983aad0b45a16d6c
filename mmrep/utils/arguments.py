"""The one check of mmrep's integer arguments (widths, counts, cluster numbers, seeds).

An integer argument is a Python int or a NumPy integer (`numbers.Integral`), but not a bool
(an int subclass, so `True` would pass as 1). `check_int` returns it as a plain Python int,
so that a NumPy integer never reaches `get_config` (which must stay JSON-serialisable).
"""

import numbers


def is_int(value, minimum=None, maximum=None):
    """Whether `value` is an integer (not a bool) within the optional inclusive bounds.

    Args:
        value: the value to test.
        minimum: int or `None`. The smallest value allowed; `None` for no lower bound.
        maximum: int or `None`. The largest value allowed; `None` for no upper bound.

    Returns:
        `True` when `value` is a Python int or a NumPy integer, not a bool, and
        `minimum <= value <= maximum` for the bounds given; `False` otherwise.

    Example:

    >>> import numpy as np
    >>> is_int(3), is_int(np.int64(3), 1), is_int(True), is_int(3.0), is_int(0, 1)
    (True, True, False, False, False)
    """
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and (minimum is None or value >= minimum)
        and (maximum is None or value <= maximum)
    )


def check_int(name, value, minimum=None, maximum=None):
    """Returns `value` as a Python int, after checking it as `is_int` does.

    Args:
        name: str. The argument's name, for the error message.
        value: the argument's value.
        minimum: int or `None`. The smallest value allowed; `None` for no lower bound.
        maximum: int or `None`. The largest value allowed; `None` for no upper bound.

    Returns:
        `int(value)`: a plain Python int, even for a NumPy integer.

    Raises:
        ValueError: if `value` is not an int (a bool is not), or is out of bounds.

    Example:

    >>> import numpy as np
    >>> check_int("units", np.int32(8), minimum=1)
    8
    >>> check_int("units", 0, minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: Expected `units` to be an int >= 1. Received: units=0
    """
    if not is_int(value, minimum, maximum):
        raise ValueError(
            f"Expected `{name}` to be {_expectation(minimum, maximum)}. Received: {name}={value!r}"
        )
    return int(value)


def _expectation(minimum, maximum):
    if minimum is not None and maximum is not None:
        return f"an int in [{minimum}, {maximum}]"
    if minimum is not None:
        return f"an int >= {minimum}"
    if maximum is not None:
        return f"an int <= {maximum}"
    return "an int"
