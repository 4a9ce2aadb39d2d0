"""The one kind of error a user can act on."""


class ArtrankError(ValueError):
    """A refusal: an input, setting, run folder or artifact that cannot be used as asked.

    The message names the file, row, key or artifact and what would work. The scripts print it as one
    `error:` line; any other exception is a bug and keeps its traceback. A ValueError, so that callers of the
    Python API may catch it as one.
    """
