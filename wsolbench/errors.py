"""User-facing errors.

Anything the user can fix (a bad path, a malformed file, a typo) is raised as a
:class:`UserError`. The command line prints its message on one line and exits with
status 2, without a traceback (``--debug`` shows one).
"""

from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """An error caused by input the user controls; its message is shown as is."""

    exit_code = 2


class MethodOutputError(UserError):
    """A method returned unusable maps (NaN/Inf, wrong shape); names method and image."""


class TrainingDiverged(UserError):
    """A training loss became NaN/Inf; the last good checkpoint is kept."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""
