"""Parsing and range checks of the command line's values, so a bad value is refused before any work.

Example:
    parser.add_argument("--steps", type=at_least(1, "training steps"), default=16)

    >>> parse_layers("0:30:10")
    [0, 10, 20]
"""

from __future__ import annotations

import argparse


def parse_layers(text: str):
    if text == "all":
        return "all"
    layers: list[int] = []
    try:
        for part in text.split(","):
            if ":" in part:
                start, stop, *step = (int(x) for x in part.split(":"))
                layers.extend(range(start, stop, step[0] if step else 1))
            else:
                layers.append(int(part))
    except ValueError:
        raise ValueError(f"--layers {text!r}: use 'all', '3,5,7' or 'start:stop[:step]'.") from None
    return layers


def parse_ints(text: str, option: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"{option} {text!r}: give comma-separated whole numbers, e.g. {option} 0,1,2.") from None


def at_least(least: int, meaning: str):
    """An argparse type: a whole number ≥ ``least`` (so 0 steps or a 0 stride is refused before any work)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"{text!r}: {meaning}, a whole number of at least {least}")
        return value

    return parse


def fraction(inclusive: bool, meaning: str):
    """An argparse type: a number in [0, 1] (``inclusive``) or strictly between 0 and 1."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (0 <= value <= 1 if inclusive else 0 < value < 1):
            raise argparse.ArgumentTypeError(f"{text!r}: {meaning}, a number {'from 0 to 1' if inclusive else 'strictly between 0 and 1'}")
        return value

    return parse


def finite_number(meaning: str, zero: bool):
    """An argparse type: a finite number > 0, or ≥ 0 where ``zero`` (0: the option's "off")."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (value >= 0 if zero else value > 0) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r}: {meaning}, {'a number of at least 0' if zero else 'a positive number'}")
        return value

    return parse


def positive_number(meaning: str):
    """An argparse type: a finite number > 0."""
    return finite_number(meaning, zero=False)


def not_negative(meaning: str):
    """An argparse type: a finite number ≥ 0 (0: the option's "off")."""
    return finite_number(meaning, zero=True)


MIN_PMASS = fraction(True, "the least P(positive)+P(negative) answer words for an item to count")


def parse_floats(text: str, option: str) -> list[float]:
    try:
        return [float(c) for c in text.split(",")]
    except ValueError:
        raise ValueError(f"{option} {text!r}: give comma-separated numbers, e.g. {option}=-1,0,1.") from None
