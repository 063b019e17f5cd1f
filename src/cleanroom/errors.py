"""The one error tree: every error cleanroom reports to a user, named by what failed.

Each message is one line, phrased for the person at the keyboard ("config key `train.steps` must be
> 0, got -3"), and says what to do where that is known. The CLI catches `CleanroomError` in one place
(`cli.main`) and prints it without a traceback, exit code 2; an `OSError` (disk full, permission denied)
is printed the same way. Anything else that escapes is a bug and keeps its traceback.

    CleanroomError
    ├── ConfigError             a config key, preset or command-line option
    │   └── MissingDependencyError   an optional package (the message names what to install)
    │       └── SourceMissingError   a seed or fact source: its package, or the source itself
    ├── StoreError              the run directory: a stage's output is missing or unreadable
    │   └── CorruptFileError    a file that no longer matches its manifest checksum
    ├── ModelError              a model or an endpoint: not found, not loadable, unreachable, failing
    │   └── ModelNotServed      the endpoint answers but serves another model
    └── InputError              input data the user gave: corpus, fine-tuning or audit files and items
"""

from __future__ import annotations

from pathlib import Path


class CleanroomError(Exception):
    """A problem cleanroom can name; its message is one line and the CLI exits with code 2."""

    exit_code = 2
    stage = ""  # the stage key it came from (set by the pipeline); the CLI prints it before the message


class ConfigError(CleanroomError, ValueError):
    """A config key, preset or command-line option is wrong."""


class MissingDependencyError(ConfigError, ImportError):
    """An optional package is not installed; the message names the pip (or apt) package."""


class SourceMissingError(MissingDependencyError):
    """A seed source (real-teacher prompts) or fact source (the knowledge audit) cannot be read."""


class StoreError(CleanroomError, RuntimeError):
    """The run directory: a stage's output is missing (run that stage first) or unreadable."""


class CorruptFileError(StoreError):
    """A file no longer matches the checksum its manifest recorded."""

    def __init__(self, path: Path, reason: str, stage: str):
        self.path, self.reason, self.stage = path, reason, stage
        super().__init__(f"corrupted file {path}: {reason} (written by stage `{stage}`; nothing was changed — "
                         f"re-run that stage with --force to rebuild it)")


class ModelError(CleanroomError, RuntimeError):
    """A model or an endpoint: not found, not loadable, unreachable, refusing or failing requests."""


class ModelNotServed(ModelError):
    """The endpoint answers but does not serve the model asked for."""


class InputError(CleanroomError, ValueError):
    """Input data the user gave (corpus, fine-tuning or audit files, evaluation items) cannot be used."""
