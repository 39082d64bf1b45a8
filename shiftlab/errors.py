"""User-facing errors."""


class ShiftlabError(Exception):
    """A problem with the user's input or configuration.

    The message is one line that names the file or params key and the problem;
    the command line prints it as ``shiftlab: error: <message>`` and exits 2.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
