"""The base of chaosgd's own exceptions, so that a caller can catch them all at once."""


class ChaosgdError(Exception):
    """Raised by chaosgd for input it refuses or a state it cannot go on from; each subclass also derives from
    the builtin exception it is a kind of (``ValueError``, ``FileNotFoundError``, ``RuntimeError``, ...)."""
