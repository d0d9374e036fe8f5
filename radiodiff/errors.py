"""The one exception type that means "the user asked for something we cannot do"."""


class UserError(Exception):
    """A mistake in user input (a file, a flag, a params key).

    The CLI and the stage entry points print its message as one line and exit non-zero,
    with no stack trace. Raise it only for problems the user can fix; bugs stay ordinary
    exceptions so they keep their traceback.
    """


class RunFailure(Exception):
    """A run that fails the same way each time it is repeated, for a reason the message names
    with what to change: CUDA out of memory at a batch size, a loss that turned NaN.

    Entry points print it as one line and exit with `RUN_FAILURE_EXIT`, which the Prefect
    retry rule, like a UserError's exit 2, does not retry (a retry would fail again).
    """


USER_ERROR_EXIT = 2
RUN_FAILURE_EXIT = 3
