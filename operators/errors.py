"""The one error every layer raises for input a user can fix: a wrong path, a flag that does not
apply, an index that lacks what was asked. The command line prints it as one line and exits 2;
an operational failure (a service gone, a full disk, a lock held) exits 1."""


class UsageError(ValueError):
    """The input is wrong; the message says what, and what to do."""
