"""The errors every layer may raise; this module imports nothing.

A *user error* (:data:`USER_ERRORS`) is one of the user's config, files or training run: the
entry points report it in one line (``error: ...``, exit status 2), with no traceback.
"""


class ConfigError(ValueError):
    """A config value is of the wrong type, outside its allowed range, or inconsistent with the data."""


class DataError(RuntimeError):
    """A data file is missing, corrupt or holds invalid values."""


class NonFiniteError(RuntimeError):
    """Training produced NaN/inf and the policy says stop."""


class DivergenceError(NonFiniteError):
    """Training ran away with finite values and ``nonfinite.divergence.policy`` says stop (a training
    fault reported like a non-finite one)."""


#: errors of the user's config, files or training run: reported as one line, no traceback
USER_ERRORS = (ConfigError, DataError, FileNotFoundError, NonFiniteError)
#: errno values of a run folder that cannot be written: no space, over quota, read-only, no permission
STORAGE_ERRNOS = (28, 122, 30, 13, 1)  # ENOSPC, EDQUOT, EROFS, EACCES, EPERM


def storage_error(exc: BaseException) -> bool:
    """True for an OSError of a file that cannot be written (:data:`STORAGE_ERRNOS`)."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS
