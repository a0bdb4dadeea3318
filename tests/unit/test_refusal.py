"""Unit tests for refusal.py: which errors are configuration problems, and when a side stops."""

from __future__ import annotations

import pytest

from s5jtransfer import refusal
from s5jtransfer.config import Secret, Side, Writes
from s5jtransfer.errors import ConfigError

DEST = Side("destination", "b", "copy/", "us-east-1", Secret(""), Secret(""), ("http://192.0.2.7:9000",),
            writes=Writes(storage_class="DEEP_ARCHIVE"))
SRC = Side("source", "b", "data/", "us-east-1", Secret(""), Secret(""), ())


@pytest.mark.parametrize("error,code", [
    # s5cmd's --json "error", a single PUT and a multipart upload
    ("AccessDenied: Access Denied\n\tstatus code: 403, request id: X, host id: Y", "AccessDenied"),
    ("MultipartUpload: upload multipart failed\n\tupload id: abc\ncaused by: AccessDenied: Access Denied",
     "AccessDenied"),
    ("KMS.DisabledException: arn:aws:kms:... is disabled. status code: 400", "KMS.DisabledException"),
    ("InvalidStorageClass: The storage class you specified is not valid status code: 400", "InvalidStorageClass"),
    ("AccessControlListNotSupported: The bucket does not allow ACLs", "AccessControlListNotSupported"),
    # s3.describe_error's line for a boto3 upload
    ("access denied by http://h:1 (AccessDenied: Access Denied); check the ...", "AccessDenied"),
    ("SlowDown: Please reduce your request rate. status code: 503", None),
    ("RequestTimeout: Your socket connection to the server was not read from", None),
    ("ExpiredToken: The provided token has expired.", None),  # fresh credentials, not a setting, fix it
    ("s5cmd exited 1 without a result for it", None),
])
def test_which_errors_are_refusals(error, code):
    assert refusal.code_of(error) == code


def test_the_advice_names_the_settings_that_fix_it():
    assert "destination.sse" in refusal.advice(DEST, "AccessDenied") and "destination.acl" in refusal.advice(DEST, "AccessDenied")
    assert "destination.sse_kms_key_id" in refusal.advice(DEST, "KMS.DisabledException")
    assert "DEEP_ARCHIVE" in refusal.advice(DEST, "InvalidStorageClass")
    assert "remove destination.acl" in refusal.advice(DEST, "AccessControlListNotSupported")
    assert "kms:Decrypt" in refusal.advice(SRC, "AccessDenied") and "kms:Decrypt" in refusal.advice(SRC, "KMS.X")
    assert "source.access_key" in refusal.advice(SRC, "InvalidAccessKeyId")


def test_refusals_in_a_row_of_several_objects_stop_the_side_naming_endpoint_error_and_fix():
    s = refusal.Streak(DEST, "uploads")
    s.failed("a", "AccessDenied: Access Denied status code: 403, request id: R1, host id: H")
    s.failed("b", "AccessDenied: Access Denied status code: 403, request id: R2, host id: H")
    s.check()  # two: not yet
    s.failed("c", "AccessDenied: Access Denied status code: 403, request id: R3, host id: H")
    with pytest.raises(refusal.Refused) as err:
        s.check()
    msg = str(err.value)
    assert isinstance(err.value, ConfigError) and err.value.exit_code == 2
    assert "http://192.0.2.7:9000" in msg and "AccessDenied: Access Denied status code: 403" in msg
    assert "destination.sse" in msg and "'c'" in msg and "request id" not in msg
    s.succeeded()  # once stopping, nothing undoes it
    assert s.tripped


def test_a_success_or_another_failure_between_refusals_starts_the_count_again():
    s = refusal.Streak(DEST, "uploads")
    for key in ("a", "b"):
        s.failed(key, "AccessDenied: x")
    s.succeeded()
    s.failed("c", "AccessDenied: x")
    s.failed("d", "SlowDown: y")
    s.failed("e", "AccessDenied: x")
    assert not s.tripped


def test_one_object_refused_among_many_that_move_is_not_a_setting_but_alone_it_is():
    s = refusal.Streak(DEST, "uploads")
    s.succeeded()
    for _ in range(5):
        s.failed("the-one", "AccessDenied: x")  # its tries: it is set aside like any failure
    assert not s.tripped
    alone = refusal.Streak(DEST, "uploads")
    for _ in range(3):
        alone.failed("the-only", "AccessDenied: x")  # nothing ever worked
    assert alone.tripped
