"""Errors a user can fix; the CLI prints their message as one line, without a traceback."""


class UnilsegError(Exception):
    """Bad input, a bad file or a bad setting; the message says what to do."""


class CheckpointError(UnilsegError):
    """A weights file that is missing, unreadable, unsafe or of another model."""
