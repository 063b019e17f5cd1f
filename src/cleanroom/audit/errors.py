"""The audit's user-facing errors: one line each; the CLI prints them without a traceback (exit code 2)."""

from __future__ import annotations

from cleanroom.lm.api import LMError


class AuditError(LMError):
    """A runtime problem (missing package, unreachable endpoint, failed requests)."""


class AuditInputError(AuditError):
    """Bad input from the user (unknown task, model or option value)."""
