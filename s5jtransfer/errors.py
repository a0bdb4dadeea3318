"""Exception types the command-line layer turns into one line and an exit code."""


class S5jError(Exception):
    """An error the operator can act on; str() is the whole message."""

    exit_code = 1


class ConfigError(S5jError):
    """config.yaml is missing, unreadable or invalid (exit 2, nothing touched)."""

    exit_code = 2


class LockHeld(S5jError):
    """Another process already holds the lock this command needs."""

    exit_code = 3


class ConnectError(S5jError):
    """The endpoint, TLS, credentials or bucket check failed."""

    exit_code = 1
