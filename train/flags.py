"""Argument types and helpers shared by the training scripts: numbers that must be finite and in range, the flags
every trainer has (threads, progress bar, the card's hardware line), and that line (no paper equation).

argparse's `type=float` accepts "nan" and "inf", and NaN fails every comparison, so each check tests for what is
wanted (value > 0 and finite) rather than against what is not.
"""
from __future__ import annotations

import argparse
import math
import os


def positive(kind):
    """An argparse type: `kind` (int or float) parsed from the text, finite and > 0."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
        return value
    return parse


def non_negative(text):
    """An argparse type: a float, finite and >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def hardware(args) -> str:
    """The card's hardware line: --hardware as given, else the CPU count and torch's threads."""
    import torch

    if args.hardware:
        return args.hardware
    threads = torch.get_num_threads()
    return f"{os.cpu_count()} CPU cores, {threads} torch thread{'s' if threads != 1 else ''}"


def add_run_flags(group, card_hardware: bool = False) -> None:
    """--num-threads and --progress on a parser or argument group; with card_hardware also --hardware (see hardware)."""
    if card_hardware:
        group.add_argument("--hardware", default=None,
                           help="hardware line for the card (default: the CPU count and torch threads, detected)")
    group.add_argument("--num-threads", type=int, default=0,
                       help="CPU threads for torch (0 = torch's default; 1 is fastest on a CPU shared with other jobs)")
    group.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a tqdm progress bar")
