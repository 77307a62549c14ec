from zbroker import errors as E


def test_codes_map_to_classes_with_kafka_numbers():
    assert E.for_code(6) is E.NotLeaderOrFollowerError
    assert E.NotLeaderOrFollowerError.code == 6 and E.NotLeaderOrFollowerError.retriable
    assert E.for_code(1) is E.OffsetOutOfRangeError and not E.OffsetOutOfRangeError.retriable
    assert E.for_code(36).__name__ == "TopicAlreadyExistsError"
    assert issubclass(E.for_code(3), E.ZBrokerError)


def test_unknown_codes_are_kept_not_crashing():
    err = E.error_from(9999, "future error")
    assert isinstance(err, E.UnknownError) and err.code == 9999 and "future error" in str(err)


def test_error_from_keeps_the_message():
    err = E.error_from(40, "retention_ms: must be an integer")
    assert isinstance(err, E.InvalidConfigError) and err.message == "retention_ms: must be an integer"
