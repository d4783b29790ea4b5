"""Errors a user can act on: the message names the file, column, rule or option."""


class InputError(RuntimeError):
    """Input data is missing or malformed, or a rule leaves nothing; the CLI exits with code 1."""
