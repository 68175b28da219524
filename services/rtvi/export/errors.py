"""The errors `rtvi export` ends with: a single line saying what to change."""

from rtvi.errors import BadInput, WorkFailed


class ExportError(BadInput):
    """The export cannot go on; the message is one line naming the input and the problem."""


class AccuracyGateFailed(WorkFailed):
    """The int8 model was written but missed ``--min-agreement``; it is left aside, not installed."""
