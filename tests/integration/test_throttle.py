"""Login throttling against real storage: what a login's place among the checks in flight
becomes when it is settled, and when it is not."""
import time
import uuid

import pytest

from shared import throttle
from shared.errors import NotFound, TooManyRequests
from tests.conftest import reset_caches

pytestmark = pytest.mark.azurite


@pytest.fixture
def limits(azurite, monkeypatch):
    monkeypatch.setenv("LOGIN_MAX_FAILURES", "2")
    monkeypatch.setenv("LOGIN_MAX_FAILURES_PER_ADDRESS", "3")
    reset_caches()
    yield
    monkeypatch.undo()
    reset_caches()


def record(kind, value):
    try:
        return throttle._rows.get(kind, throttle._key(value))
    except NotFound:  # nothing remembered
        return None


def test_checks_in_flight_and_failures_together_stay_within_the_limit(limits):
    name, address = f"u{uuid.uuid4().hex[:8]}", f"a{uuid.uuid4().hex[:8]}"
    first, second = throttle.begin(name, address), throttle.begin(name, address)
    with pytest.raises(TooManyRequests, match="at once"):
        throttle.begin(name, address)  # two checks in flight for a name allowed two failures
    first.failed()
    with pytest.raises(TooManyRequests, match="at once"):
        throttle.begin(name, address)  # one failure and one check in flight
    second.succeeded()
    assert record("user", name) is None  # the name's count is cleared
    assert record("address", address)["failures"] == 1  # the address's stays
    throttle.begin(name, address).succeeded()
    assert record("address", address)["failures"] == 1


def test_a_place_not_given_back_counts_as_a_failure_when_it_lapses(limits, monkeypatch):
    """Its instance stopped, or storage failed while its outcome was written: the check may have
    been answered, so it is not a free guess. Two lapsed places reach the name's limit of two."""
    monkeypatch.setattr(throttle, "_IN_FLIGHT_SECONDS", 1)
    name, address = f"u{uuid.uuid4().hex[:8]}", f"a{uuid.uuid4().hex[:8]}"
    throttle.begin(name, address), throttle.begin(name, address)  # never settled
    with pytest.raises(TooManyRequests, match="at once"):
        throttle.begin(name, address)
    time.sleep(2.1)
    with pytest.raises(TooManyRequests, match="too many failed logins"):
        throttle.begin(name, address)  # the lapsed places locked the name
    stored = record("user", name)
    assert stored["failures"] == 2 and stored["lockedUntil"] > time.time() and stored["lockouts"] == 1
    assert record("address", address)["failures"] in (0, 2)  # folded when its row is next written


def test_a_failure_that_could_not_be_written_still_counts(limits, monkeypatch):
    """Storage failed as the failure was recorded: the 401 was answered all the same, so the
    attempt's place stays taken and becomes the failure when it lapses."""
    monkeypatch.setattr(throttle, "_IN_FLIGHT_SECONDS", 1)
    name, address = f"u{uuid.uuid4().hex[:8]}", f"a{uuid.uuid4().hex[:8]}"
    attempt = throttle.begin(name, address)
    update = throttle._update
    monkeypatch.setattr(throttle, "_update", lambda key, change: False)  # kept losing until its deadline
    attempt.failed()
    monkeypatch.setattr(throttle, "_update", update)
    time.sleep(2.1)
    throttle.begin(name, address).failed()
    assert record("user", name)["failures"] == 2
    with pytest.raises(TooManyRequests, match="too many failed logins"):
        throttle.begin(name, address)


def test_the_failure_that_reaches_the_limit_locks(limits):
    name, address = f"u{uuid.uuid4().hex[:8]}", f"a{uuid.uuid4().hex[:8]}"
    throttle.begin(name, address).failed()
    throttle.begin(name, address).failed()
    with pytest.raises(TooManyRequests, match="too many failed logins") as refused:
        throttle.begin(name, address)
    assert int(refused.value.headers["Retry-After"]) > 50
    assert record("address", address)["failures"] == 2  # the refused attempt took no place there
    assert record("address", address)["inFlight"] == "{}"
