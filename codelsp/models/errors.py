"""The one error type of the model layer."""


class ModelError(Exception):
    """A model cannot be used; the message is one line meant for the user."""
