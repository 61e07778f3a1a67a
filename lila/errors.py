"""Errors Lila reports to users: each carries a one-line message, never a traceback."""


def one_line(text: str, limit: int = 300) -> str:
    """Text from outside (a model file, a template's message) made safe to show as part
    of one line: at most `limit` characters, every one that is not printable escaped
    (newlines, ESC, bidirectional overrides), so it cannot forge a line or steer a terminal."""
    text = text[:limit] + ("..." if len(text) > limit else "")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class LilaError(Exception):
    """Base class of every error Lila reports as `error: <message>`."""


class ModelFormatError(LilaError):
    """The model file is malformed, truncated or contradicts itself."""


class UnsupportedError(LilaError):
    """The file is well formed but uses an architecture or tensor type Lila does not run."""


class ContextOverflowError(LilaError):
    """A prompt or generation would not fit in the model's context window."""


class ModelChangedError(LilaError):
    """The model file changed on disk while it was loaded (truncated, overwritten in
    place): its weights can no longer be trusted. Load it again."""


class AdapterError(LilaError):
    """An adapter file is malformed, of a kind Lila does not run, or does not fit the
    loaded model. The model is left as it was."""
