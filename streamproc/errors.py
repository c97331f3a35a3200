"""Errors that streamproc reports to users as one clear line (the CLI exits 1 on them)."""


class StreamprocError(Exception):
    """A problem the user can fix: the message says what is wrong and what to do."""
