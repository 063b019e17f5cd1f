"""One base class for every error cleanroom reports to a user.

Each message is one line, phrased for the person at the keyboard ("config key `train.steps` must be
> 0, got -3"), and says what to do where that is known. The CLI catches `CleanroomError` in one place
(`cli.main`) and prints it without a traceback, exit code 2; an `OSError` (disk full, permission denied)
is printed the same way. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class CleanroomError(Exception):
    """A problem cleanroom can name: bad input, a missing file or package, an unreachable endpoint."""

    exit_code = 2
    stage = ""  # the stage key it came from (set by the pipeline); the CLI prints it before the message
