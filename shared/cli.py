"""Argument types shared by the project's command lines (`python -m shared.train`,
`shared.experiments`, `shared.figures.depth`, `shared.figures.collapse`): a bad value ends with one
line naming it and what is valid, not a traceback."""

import argparse
import ast

from .compute import check_device


def seed_arg(text: str) -> int:
    """An argparse type: a non-negative int."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"a seed is a non-negative int, got {text!r}")
    return int(text)


def positive_int_arg(text: str) -> int:
    """An argparse type: a positive int."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a positive int, got {text!r}")
    return int(text)


def device_arg(text: str):
    """An argparse type: a device this machine has (`shared.compute.check_device`)."""
    try:
        return str(check_device(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def literal_value(text: str):
    """A `--set FIELD=VALUE` value: a Python literal (0.1, True, None, (1, 2)), a float's nan/inf
    spelling, or the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return float(text) if text.lower().lstrip("+-") in ("nan", "inf", "infinity") else text
