"""Keeping credentials out of everything sslray prints, writes or records (docs/security.md).

Two rules, applied in one place each. Refusal: a URL with an inline password
(``s3://KEY:SECRET@bucket``, ``http://user:pass@mlflow``) is rejected wherever sslray takes
one, because a URL is echoed by MLflow ("View run at ..."), botocore tracebacks, Ray job
logs and run params; the message says where the credential belongs instead. Redaction:
whatever URL is printed or recorded goes through ``redact_url`` (user info and secret-looking
query values become ``<redacted>``), and config dicts through ``redact``.
"""

from __future__ import annotations

import re
from typing import Any

SECRET_PATTERN = re.compile(
    r"(secret|password|passwd|token|credential|signature|api[_-]?key|access[_-]?key|session)", re.I)
SECRET_KEYS = {"key", "secret", "sig"}  # s3fs's names for the access key and secret; Azure SAS signatures
REDACTED = "<redacted>"

# scheme://user:password@ -- the password may hold "/" (AWS secret keys do), never "@" or white space
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s/@:?#]*)"
                       r"(?::(?P<password>[^\s@\"'<>]*))?@")
_QUERY_PAIR = re.compile(r"(?P<sep>[?&;])(?P<key>[^=&;#\s]+)=(?P<value>[^&;#\s]*)")

ADVICE = {
    "s3": "use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE (~/.aws) or the node's instance role",
    "http": "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (MLflow's basic auth reads them)",
    "postgresql": "give the password through PGPASSWORD or ~/.pgpass, or log to an mlflow server",
}
SCHEME_ADVICE = {"s3": "s3", "s3a": "s3", "http": "http", "https": "http", "postgresql": "postgresql",
                 "postgres": "postgresql"}


class CredentialsError(ValueError):
    """A URL carries a credential; the message shows it redacted and says where it belongs."""


def _is_credential(match: re.Match) -> bool:
    """``host:5000/path@x`` is a port and a path, not ``user:password@``."""
    password = match.group("password")
    return password is not None and not re.fullmatch(r"\d{1,5}/.*", password)


def inline_credentials(text: str) -> bool:
    """True when ``text`` holds a URL with ``user:password@`` in it."""
    return any(_is_credential(m) for m in _USERINFO.finditer(str(text)))


def redact_url(text: str) -> str:
    """Every URL in ``text`` with its user info and secret-looking query values replaced.

    ``s3://KEY:SECRET@bucket/x`` -> ``s3://<redacted>@bucket/x``;
    ``http://h:5000/?token=abc&x=1`` -> ``http://h:5000/?token=<redacted>&x=1``.
    """
    text = _USERINFO.sub(lambda m: m.group(0) if m.group("password") is not None and not _is_credential(m)
                         else f"{m.group('scheme')}{REDACTED}@", str(text))
    if "://" not in text:
        return text
    return _QUERY_PAIR.sub(lambda m: f"{m.group('sep')}{m.group('key')}={REDACTED}" if is_secret(m.group("key"))
                           else m.group(0), text)


def is_secret(key: object) -> bool:
    return str(key).lower() in SECRET_KEYS or bool(SECRET_PATTERN.search(str(key)))


def redact(data: Any) -> Any:
    """Replace values whose key names a credential; redact URLs in strings; recurse through dicts and lists."""
    if isinstance(data, dict):
        return {k: (REDACTED if is_secret(k) else redact(v)) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact(v) for v in data]
    if isinstance(data, str):
        return redact_url(data)
    return data


def refuse_inline_credentials(url: object, where: str) -> None:
    """Raise ``CredentialsError`` naming ``where`` (an option, key or variable) if ``url`` has a password."""
    if isinstance(url, str) and inline_credentials(url):
        raise CredentialsError(credentials_message(url, where))


def credentials_message(url: str, where: str) -> str:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    advice = ADVICE.get(SCHEME_ADVICE.get(scheme, ""),
                        "give them to the storage client through its own environment or config file")
    return (f"{where}: {redact_url(url)} carries credentials inline (user:password@), which sslray refuses "
            f"because URLs are printed and recorded; remove them from the URL and {advice} (docs/security.md)")
