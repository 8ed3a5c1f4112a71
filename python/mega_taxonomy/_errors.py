"""Exceptions of mega_taxonomy.

Every failure of the C++ engine (``megatax::Error``) is raised as :class:`MegataxError`,
a :class:`RuntimeError`, with the engine's message unchanged and its code in ``.code``
(the stable lower-case name, e.g. ``"invalid_argument"``, ``"not_found"``,
``"already_exists"``, ``"data_loss"``, ``"io_error"``; see include/megatax/error.h).

Two codes also get the standard Python class users already catch:

* ``invalid_argument`` -> :class:`MegataxValueError` (also a :class:`ValueError`):
  a bad shape, dimension, k, option or config field.
* ``not_found`` -> :class:`MegataxNotFoundError` (also a :class:`FileNotFoundError`):
  the named file, glob or taxonomy does not exist.

Wrong argument *types* (a complex or object array, a string where a number goes) raise
plain :class:`TypeError`. Ctrl-C during ``TaxonomyEngine.fit`` raises
:class:`KeyboardInterrupt`.
"""

from __future__ import annotations

__all__ = ["MegataxError", "MegataxValueError", "MegataxNotFoundError", "error_class"]


class MegataxError(RuntimeError):
    """An operation of the Mega-Taxonomy engine could not complete.

    ``str(e)`` is the engine's message (it names the file, row or field and what was
    expected); ``e.code`` is the error code's name, e.g. ``"data_loss"``.
    """

    code: str

    def __init__(self, message: str, code: str = "unknown") -> None:
        super().__init__(message)
        self.code = code


class MegataxValueError(MegataxError, ValueError):
    """An invalid argument (code ``"invalid_argument"``): fix the call."""


class MegataxNotFoundError(MegataxError, FileNotFoundError):
    """The named file, glob or taxonomy does not exist (code ``"not_found"``)."""


_BY_CODE: dict[str, type[MegataxError]] = {
    "invalid_argument": MegataxValueError,
    "not_found": MegataxNotFoundError,
}


for _cls in (MegataxError, MegataxValueError, MegataxNotFoundError):
    _cls.__module__ = "mega_taxonomy"


def error_class(code: str) -> type[MegataxError]:
    """The exception class raised for an engine error code (used by the C++ module)."""
    return _BY_CODE.get(code, MegataxError)
