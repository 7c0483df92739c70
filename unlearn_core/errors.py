"""One exception type for every mistake a user can make.

Why: the dashboard and the command line show ``UserError`` messages verbatim (no traceback),
so each message must say what was wrong and what to do about it. Anything else that escapes
is a bug in this library, not the user's fault.
"""


class UserError(ValueError):
    """A problem with the user's input (file, criteria, config) that they can fix."""
