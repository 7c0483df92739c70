"""One exception type for every mistake a user can make.

Why: the dashboard and the command line show ``UserError`` messages verbatim (no traceback),
so each message must say what was wrong and what to do about it. Anything else that escapes
is a bug in this library, not the user's fault.
"""

#: Longest message shown; a longer one (e.g. echoing pages of pasted input) keeps its start
#: and end, which say what was wrong and what to do.
MAX_MESSAGE_CHARS = 3000


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut in the middle to at most about ``limit`` characters."""
    if len(text) <= limit:
        return text
    keep = limit // 2
    return f"{text[:keep]} … ({len(text) - 2 * keep:,} characters left out) … {text[-keep:]}"


class UserError(ValueError):
    """A problem with the user's input (file, criteria, config) that they can fix."""

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(shorten(str(message)), *args)
