"""The project's exceptions: the CLI turns each into one line on stderr and a non-zero exit."""


class PolycapError(Exception):
    """Base of every error polycap raises on purpose."""


class ConfigError(PolycapError):
    """A config key is unknown, has the wrong type or a bad value; the message names the key."""


class InputError(PolycapError):
    """An input file is missing, unreadable or malformed as a whole; the message names it."""
