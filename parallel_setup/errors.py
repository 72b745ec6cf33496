"""The one exception type for problems the user can fix."""


class FatalError(Exception):
    """A user-fixable problem: the CLI prints the message and exits 1.

    ``prefixed`` False prints the message as is (for multi-line reports that
    already name their file on every line).
    """

    prefixed = True

    def __init__(self, message: str, *, prefixed: bool = True):
        super().__init__(message)
        self.prefixed = prefixed
