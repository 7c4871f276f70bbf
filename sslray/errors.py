"""One readable line for an error a user can fix, wherever it was raised.

sslray's own checks raise ``ValueError``/``OSError`` subclasses whose message names the file,
key or URL. Raised inside a Ray task, actor or Train worker, they reach the driver wrapped
(``RayTaskError``, Ray Data's ``UserCodeException``, Train's worker-group errors) and, since
exceptions cross processes pickled without their ``__cause__``, sometimes only as text in a
150-line trace. ``user_message`` digs the original message out of either form; anything
that is not an input problem (a bug) is left for a full traceback.
"""

from __future__ import annotations

import re

from sslray.credentials import redact_url

# What a user's input can cause. Plain RuntimeError/TypeError mean a bug and keep their traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, FileNotFoundError, FileExistsError,
                                                 ConnectionError, PermissionError, IsADirectoryError,
                                                 NotADirectoryError)
_USER_ERROR_NAMES = "|".join(sorted({c.__name__ for c in USER_ERRORS} | {
    "StoreError", "IngestError", "ImageReadError", "WeightsError", "CheckpointError", "ConfigError", "LabelsError",
    "OutputError", "IntensityError", "CredentialsError", "TrackingUnreachable", "EmbedError",
    "EmbedPlanMismatch"}))
# A traceback's last line: "sslray.data.store.StoreError: msg" (optionally module-qualified).
_RAISED_LINE = re.compile(rf"^(?:[\w.]+\.)?(?:{_USER_ERROR_NAMES}): (.+)$", re.M)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def user_message(err: BaseException) -> str | None:
    """The one-line message of the input problem behind ``err`` (URLs redacted, since third-party
    messages may quote one with its credentials), or None if ``err`` is a bug."""
    message = _find_message(err)
    return None if message is None else redact_url(message)


def _find_message(err: BaseException) -> str | None:
    for inner in _chain(err):
        if _is_wrapper(inner):
            continue
        if isinstance(inner, USER_ERRORS):
            return _text(inner)
    for inner in _chain(err):  # the original only survives as text in the wrapper's message
        found = _RAISED_LINE.findall(_ANSI.sub("", str(inner)))
        if found:
            return found[0].strip()
    return None


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and everything it wraps: causes, contexts, Ray's ``cause`` and Train's worker failures."""
    seen: list[BaseException] = []
    todo = [err]
    while todo:
        current = todo.pop(0)
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [getattr(current, "cause", None), current.__cause__, current.__context__]
        failures = getattr(current, "worker_failures", None)
        if isinstance(failures, dict):
            todo += list(failures.values())
    return seen


def _is_wrapper(err: BaseException) -> bool:
    """Ray's wrappers subclass the wrapped type (``RayTaskError(ValueError)``); their text is a trace."""
    return type(err).__module__.startswith("ray.") or type(err).__name__.startswith("RayTaskError")


def _text(err: BaseException) -> str:
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    return str(err).strip() or type(err).__name__
