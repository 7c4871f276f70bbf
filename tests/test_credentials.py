"""Credentials: URLs with an inline password are refused with advice; whatever is printed is redacted.

Every place sslray takes or prints a URL (CLI, MLflow, Ray jobs, logs) is checked end to end in
tests/hardening/test_credentials.py; this file pins the two rules themselves.
"""

import pytest

from sslray.credentials import (
    CredentialsError,
    inline_credentials,
    redact,
    redact_url,
    refuse_inline_credentials,
)


@pytest.mark.parametrize("url, inline", [
    ("s3://KEY:SECRET@bucket/x", True),
    ("s3://AKIA:abc/def+ghi@bucket", True),  # AWS secret keys may hold "/"
    ("http://user:pass@mlflow:5000", True),
    ("http://mlflow:5000/path@x", False),  # a port and a path, not user:password@
    ("s3://bucket/x", False),
    ("http://token@host", False),  # a user name alone carries no secret
])
def test_inline_passwords_are_found_and_ports_are_not(url, inline):
    assert inline_credentials(url) is inline


def test_redaction_hides_user_info_and_secret_query_values_only():
    assert redact_url("s3://KEY:SECRET@bucket/x") == "s3://<redacted>@bucket/x"
    assert redact_url("see http://h:5000/?token=abc&x=1 now") == "see http://h:5000/?token=<redacted>&x=1 now"
    assert redact_url("http://h:5000/runs@2") == "http://h:5000/runs@2"
    assert redact_url("a=b&token=c") == "a=b&token=c"  # not a URL: left alone
    config = {"storage": {"secret": "s", "endpoint": "http://u:p@minio"}, "aws_access_key_id": "AKIA", "steps": 3,
              "urls": ["s3://a:b@c"]}
    assert redact(config) == {"storage": {"secret": "<redacted>", "endpoint": "http://<redacted>@minio"},
                              "aws_access_key_id": "<redacted>", "steps": 3, "urls": ["s3://<redacted>@c"]}


@pytest.mark.parametrize("url, advice", [
    ("s3://K:S@bucket", "AWS_ACCESS_KEY_ID"),
    ("https://u:p@mlflow", "MLFLOW_TRACKING_PASSWORD"),
    ("postgresql://u:p@db/mlflow", "PGPASSWORD"),
    ("gs://u:p@bucket", "through its own environment or config file"),
])
def test_refusal_names_where_shows_the_url_redacted_and_says_where_the_secret_belongs(url, advice):
    with pytest.raises(CredentialsError) as err:
        refuse_inline_credentials(url, "--store")
    message = str(err.value)
    assert message.startswith("--store: ") and advice in message and ":p@" not in message and ":S@" not in message
    refuse_inline_credentials("s3://bucket/x", "--store")
    refuse_inline_credentials(None, "--store")  # an unset option is not a URL
