"""The package's one user-facing error type, at the bottom of the import graph.

Every layer (checks, evaluation, the public API, the benchmark runner) raises
it for a mistake the user can fix; the tools print its message as one line and
exit with code 2.
"""


class ConfigError(ValueError):
    """A config mistake; the message is one line naming the file or key."""
