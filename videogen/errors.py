"""The errors a user can cause.

Everything a user can get wrong -- a missing file, a corrupt video, a frame count the model cannot take,
a model folder with no weights, a request larger than the machine -- raises a subclass of
`VideogenError` with a message that names the thing and the problem. The CLI prints such an error as
one line, ``error: ...``, and exits with status 2. Any other exception is a bug in videogen.
"""


class VideogenError(Exception):
    """Base class of the errors videogen reports to a user as one line."""


class InputError(VideogenError):
    """A file, argument or value given by the user is missing, unreadable or out of range."""


class ModelError(VideogenError):
    """A model folder, checkpoint or config is missing, incomplete or inconsistent."""


class ResourceError(VideogenError):
    """The request needs more memory, disk or devices than there are, or a backend is unavailable."""


class ConfigError(InputError):
    """A configuration file or override is malformed or names an unknown key."""


EXIT_USER_ERROR = 2  # the exit status of a user error, in every front end (the CLI and the server)
