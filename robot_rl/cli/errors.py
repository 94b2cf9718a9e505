"""The CLI's usage error, in its own module so that every command module can raise it without
importing the parser assembly (``robot_rl.cli``)."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

USAGE_ERROR = 2


class CliError(Exception):
    """A usage error: reported through the log, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse that raises CliError instead of exiting, so main() logs it and returns 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise CliError(message)
