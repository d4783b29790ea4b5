"""Errors a user can act on: the message names the file, column, rule or option."""


class InputError(RuntimeError):
    """Input data is missing or malformed, or a rule leaves nothing; the CLI exits with code 1."""


class MissingArtifact(InputError, FileNotFoundError):
    """An earlier stage's output is not in the run directory; the message names it and the stage."""
