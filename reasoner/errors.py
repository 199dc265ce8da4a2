"""The error a bad configuration raises: one line naming the key, the value and the valid choices."""


class ConfigError(ValueError):
    pass
