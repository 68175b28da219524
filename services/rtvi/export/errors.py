"""The one error `rtvi export` ends with: a single line saying what to change."""


class ExportError(RuntimeError):
    """The export cannot go on; the message is one line naming the input and the problem."""
