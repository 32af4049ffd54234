"""``minicnn exercises``' actions: ``start``, ``check`` (with ``--hint`` and ``--reveal``),
``list`` and ``train``, each an argparse sub-command with its function here; the command's
record is in :mod:`minicnn.cli`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..validation import POSITIVE_INT, UsageError
from . import EXERCISES, check, exercise, load_progress, next_hint, solution_source, start


def add_arguments(parser) -> None:
    """``start``, ``check``, ``list`` and ``train``: argparse sub-commands, each with its
    action."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    writing = actions.add_parser(
        "start", help="write the exercise files into DIR",
        description="Write one file per exercise into DIR (files already there are kept).")
    writing.add_argument("folder", metavar="DIR")
    writing.set_defaults(action_handler=start_action)

    grading = actions.add_parser(
        "check", help="grade your answers (all, or NAME)",
        description="Grade the exercises in --dir (default: here): which are right, where the "
                    "others are wrong, and the classic mistake when it recognizes one.")
    grading.add_argument("name", nargs="?", metavar="NAME",
                         help="one exercise (its function's name or number)")
    grading.add_argument("--dir", default=".", help="the exercises' folder (default: here)")
    grading.add_argument("--hint", action="store_true",
                         help="show NAME's next hint (one more each time)")
    grading.add_argument("--reveal", action="store_true",
                         help="show NAME's reference solution (it is also shown after a pass)")
    grading.set_defaults(action_handler=check_action)

    listing = actions.add_parser("list", help="the exercises and your progress")
    listing.add_argument("--dir", default=".", help="the exercises' folder (default: here)")
    listing.set_defaults(action_handler=list_action)

    training = actions.add_parser(
        "train", help="train on MNIST with your own backward passes",
        description="Train a small CNN on MNIST whose layers run your answers: the backward "
                    "passes (exercises 1-7, and 8 or 9) must pass first; every other exercise "
                    "that passes runs too (10-13: the convolution's forward, average pooling, "
                    "your optimizer). 98%% or more proves them end to end.")
    training.add_argument("--dir", default=None, help="the exercises' folder (default: here)")
    training.add_argument("folder", metavar="DIR", nargs="?", default=None,
                          help="the same as --dir (as earlier versions took it)")
    training.add_argument("--epochs", type=POSITIVE_INT.parse, default=3, help="(default 3)")
    training.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                          help="no progress bar")
    training.add_argument("--limit", type=POSITIVE_INT.parse, default=None,
                          help="train on the first N training images only")
    training.set_defaults(action_handler=train_action)


def start_action(args) -> int:
    written = start(args.folder)
    folder = Path(args.folder)
    print(f"{len(written)} exercise file(s) written to {folder}"
          + (f" ({len(EXERCISES) - len(written)} already there, kept)"
             if len(written) < len(EXERCISES) else "") + ". Next:")
    print(f"  cd {folder}\n  (edit {EXERCISES[0].file_name})\n"
          f"  minicnn exercises check {EXERCISES[0].name}")
    return 0


def list_action(args) -> int:
    progress = load_progress(args.dir)
    for item in EXERCISES:
        mark = "passed" if item.name in progress["passed"] else "      "
        print(f"{mark}  {item.number}. {item.name}: {item.title}")
    return 0


def train_action(args) -> int:
    from .training import train_with_your_layers  # the training stack, only when it runs

    if args.dir and args.folder and Path(args.dir) != Path(args.folder):
        raise UsageError(f"two folders given: --dir {args.dir} and {args.folder}; give one")
    result = train_with_your_layers(args.dir or args.folder or ".", epochs=args.epochs,
                                    limit=args.limit, verbose=0 if args.quiet else 1)
    if args.quiet:  # no progress, but the answer the command is for
        print(f"test accuracy {result['test_accuracy']:.2%} with your backward passes")
    return 0


def check_action(args) -> int:
    """Grade (all, or NAME); with --hint the next hint, with --reveal the solution."""
    if (args.hint or args.reveal) and not args.name:
        raise UsageError("--hint and --reveal need the exercise's NAME")
    if args.hint:
        item = exercise(args.name)
        seen_before = load_progress(args.dir)["hints"].get(item.name, 0)
        hints = next_hint(args.dir, args.name)
        for number, hint in enumerate(hints, 1):
            print(f"hint {number} of {len(item.hints)}: {hint}")
        if seen_before >= len(item.hints):
            print(f"\nThat was every hint there is; minicnn exercises check {item.name} --reveal "
                  "shows the reference solution.")
        return 0
    if args.reveal:
        print(solution_source(args.name))
        return 0
    grades = check(args.dir, args.name)
    for result in grades:
        item = result.exercise
        print(f"{'PASS' if result.passed else 'FAIL'}  {item.number}. {item.name}: "
              f"{result.report[0]}")
        for line in result.report[1:]:
            print(f"      {line}")
    failed = [result.exercise for result in grades if not result.passed]
    if args.name and not failed:
        print("\nThe reference solution, to compare with yours:\n")
        print(solution_source(args.name))
    elif len(grades) > 1:
        print(f"\n{len(grades) - len(failed)} of {len(grades)} passed" +
              (f"; next: minicnn exercises check {failed[0].name} (--hint for a hint)"
               if failed else ""))
    elif failed:
        print(f"\nA hint: minicnn exercises check {failed[0].name} --hint")
    return 1 if failed else 0
