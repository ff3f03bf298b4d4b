"""The one exception type that the CLI turns into a one-line error."""


class RescueError(Exception):
    """A user-facing failure: bad input, refused target, corrupt data...

    The message must say what went wrong and where (a path, a device, an offset);
    the CLI prints it on one line and exits non-zero, without a traceback.
    """

    exit_code = 1


class UsageError(RescueError):
    """Wrong arguments or a wrong kind of input file."""

    exit_code = 2


class WindowsStateError(RescueError):
    """A source Windows left hibernated / mid-journal: capturing it would store a session, not a file system."""

    exit_code = 3
