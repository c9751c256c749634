"""The error a user's mistake raises: a bad argument, recipe value or file. The CLI prints its one-line
message (`error: ...`, exit status 2) instead of a traceback; `mmdit --debug` shows the traceback."""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in what the user gave (an argument, a recipe key, a file), described in one line that
    names the file, key, value or shape at fault. A ValueError, so callers of the Python API that catch
    ValueError keep working."""
