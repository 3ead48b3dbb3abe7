"""One exception type for every error a user can fix.

Entry scripts catch :class:`UserError`, print ``error: <message>`` as one line on stderr and exit with
status 2 (no traceback). Every message names the file, line, flag or folder at fault.
"""


class UserError(Exception):
    """A problem with the user's input (flags, files, folders) described in one line."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split("\n")))
