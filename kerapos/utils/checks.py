"""One way to check an argument: integers, numbers and choices.

Every kerapos function and layer validates its arguments with these, so the
same value is accepted (or refused, with the same message) everywhere: numpy
integers count as integers, booleans never do, and a message names the
argument, the rule and the value it got. Names are argument names, never
command-line flags: the trainers translate them (`OptionsError.problems`).

Example:
```python
from kerapos.utils import checks
checks.integer(np.int64(8), "num_heads", minimum=1)     # 8
checks.choice("copy", "method", ("interpolate", "copy"))
checks.number(0.5, "dropout", minimum=0.0, below=1.0)   # 0.5
```
"""

import numbers


def is_integer(value):
    """True for Python and numpy integers, False for bools and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _bounds(minimum, maximum, below):
    rules = []
    if minimum is not None:
        rules.append(f">= {minimum}")
    if maximum is not None:
        rules.append(f"<= {maximum}")
    if below is not None:
        rules.append(f"< {below}")
    return " and ".join(rules)


def _in_bounds(value, minimum, maximum, below):
    return (
        (minimum is None or value >= minimum)
        and (maximum is None or value <= maximum)
        and (below is None or value < below)
    )


def integer(value, name, *, minimum=None, maximum=None, allow_none=False):
    """`value` as an int, or ValueError naming `name`, the rule and the value.

    Args:
        value: the value to check (int or numpy integer; bool is refused).
        name: the argument's name, for the message.
        minimum, maximum: inclusive bounds, or None.
        allow_none: accept None (and return it).
    """
    if value is None and allow_none:
        return None
    if not is_integer(value) or not _in_bounds(value, minimum, maximum, None):
        rule = _bounds(minimum, maximum, None)
        kind = "an integer" + (f" {rule}" if rule else "")
        raise ValueError(
            f"`{name}` must be {kind}{' or None' if allow_none else ''}, got {value!r}."
        )
    return int(value)


def number(value, name, *, minimum=None, maximum=None, below=None, above=None, allow_none=False):
    """`value` as a float, or ValueError. `below`/`above` are exclusive bounds."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and value == value and _in_bounds(value, minimum, maximum, below)  # NaN fails
    ok = ok and (above is None or value > above)
    if not ok:
        rule = " and ".join(
            filter(None, [f"> {above}" if above is not None else "", _bounds(minimum, maximum, below)])
        )
        kind = "a number" + (f" {rule}" if rule else "")
        raise ValueError(
            f"`{name}` must be {kind}{' or None' if allow_none else ''}, got {value!r}."
        )
    return float(value)


def choice(value, name, choices):
    """`value` if it is one of `choices`, else ValueError listing them (with a
    close match when there is one)."""
    if isinstance(value, str) or value is None or isinstance(value, (int, float)):
        if value in choices:
            return value
    import difflib

    message = f"`{name}` must be one of {', '.join(map(repr, choices))}; got {value!r}."
    if isinstance(value, str):
        strings = [c for c in choices if isinstance(c, str)]
        close = difflib.get_close_matches(value.lower(), strings, n=1)
        if close:
            message += f" Did you mean {close[0]!r}?"
    raise ValueError(message)
