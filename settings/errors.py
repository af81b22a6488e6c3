"""`ConfigError`, in a module of its own so that every module of settings/ can raise it."""


class ConfigError(Exception):
    """The configuration is unusable; the message names each bad field and why."""
