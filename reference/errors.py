"""The one exception type for a user mistake (bad value, missing tool, bad file).

:class:`UserError` subclasses :class:`ValueError`, so library callers can catch
``ValueError`` as usual, while the CLI prints it as one line with exit status 2.
"""

__all__ = ["UserError", "ToolNotFoundError"]


class UserError(ValueError):
    """A mistake in what the user asked for; the message names the bad value and what is valid."""


class ToolNotFoundError(UserError):
    """A required external tool is missing; the message says how to install it."""
