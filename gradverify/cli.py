"""``python -m gradverify``: a thin dispatcher over the subcommands each part of the package provides.

Each subcommand module defines ``configure(parser)`` and ``run(args) -> int``;
exit codes are 0 (ok), 1 (a check failed) and 2 (usage or input error).
"""
from __future__ import annotations

import argparse
import importlib
import sys

DOCUMENT = "the document: the seed's three examples ((x+y)^2, two-layer MLP, SimpleNet)"
"""What "the document" in the commands' help means (gradverify/examples.py holds the examples)."""

SUBCOMMANDS = {
    "report": ("gradverify.report.cli", "accuracy and speed report for the document's examples"),
    "fuzz": ("gradverify.fuzz.cli", "random-graph differential testing campaign"),
    "mutants": ("gradverify.fuzz.mutants_cli", "mutation self-test: does the suite catch broken rules?"),
    "regress": ("gradverify.regress.cli", "record and compare gradient baselines (CI regression gate)"),
    "audit": ("gradverify.audit.cli", "audit PyTorch's or JAX's own gradients, op by op (findings, reproducers)"),
}

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad arguments or input: exit code 2 with the message."""


def build_parser(commands=None):
    """The argument parser; only the subcommands in ``commands`` (default: all) import their modules to add options."""
    import gradverify

    parser = argparse.ArgumentParser(prog="gradverify", description="Are these gradients right? Evidence, in CI.",
                                     epilog=DOCUMENT[0].upper() + DOCUMENT[1:] + ".")
    parser.add_argument("--version", action="version", version=f"gradverify {gradverify.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_module=module)
        if commands is None or name in commands:
            importlib.import_module(module).configure(sp)
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # only the chosen subcommand's module is imported: --version and --help stay fast
    parser = build_parser(commands=[word for word in argv if not word.startswith("-")][:1])
    args = parser.parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except UsageError as err:
        print(f"gradverify {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:  # a path given on the command line or by an environment variable cannot be used
        from gradverify._files import describe

        print(f"gradverify {args.command}: error: {describe(err)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
