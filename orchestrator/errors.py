"""Errors that stop a run before it starts: the user gets one actionable line and exit code 2."""


class UserError(Exception):
    """Bad input or configuration (missing or corrupt model, unknown device or backend, bad shape)."""
