"""The one exception type that means "the user asked for something we cannot do"."""


class UserError(Exception):
    """A mistake in user input (a file, a flag, a params key).

    The CLI and the stage entry points print its message as one line and exit non-zero,
    with no stack trace. Raise it only for problems the user can fix; bugs stay ordinary
    exceptions so they keep their traceback.
    """
