"""Which errors the fetch loop reads past (`streamproc.fetching.passes_by_itself`)."""

from aiokafka.errors import (
    GroupAuthorizationFailedError,
    GroupCoordinatorNotAvailableError,
    GroupLoadInProgressError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from streamproc.fetching import passes_by_itself


def test_a_retriable_error_and_aiokafkas_plain_error_naming_one_pass_by_themselves() -> None:
    assert passes_by_itself(GroupCoordinatorNotAvailableError())
    # What aiokafka's coordinator hands `getmany` for a SyncGroup answer it did not expect, built as it
    # builds it: the worker of a broker-freeze chaos run exited on it ("KafkaError: GroupLoadInProgressError()").
    assert passes_by_itself(KafkaError(repr(GroupLoadInProgressError())))


def test_an_authorization_failure_or_an_error_it_cannot_name_still_ends_the_worker() -> None:
    assert not passes_by_itself(TopicAuthorizationFailedError())
    assert not passes_by_itself(GroupAuthorizationFailedError("g"))
    assert not passes_by_itself(KafkaError("GroupAuthorizationFailedError()"))
    assert not passes_by_itself(KafkaError("something else"))
    assert not passes_by_itself(KafkaError())
