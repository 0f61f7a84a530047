"""The one exception type raised for users of nnunet_mvext."""


class MVExtError(ValueError):
    """A user-facing error: the message names the offending key, case or file and says what is allowed."""
