"""The one exception the data preparation raises for problems a person can fix."""


class PrepareError(RuntimeError):
    """A step cannot go on; the message is one line saying what and how to fix it."""
