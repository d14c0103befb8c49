"""Service-name rules against real storage, where requests interleave."""
import uuid

import pytest

from shared import services
from shared.auth import Principal
from shared.errors import Forbidden, NotFound

pytestmark = pytest.mark.azurite

ALICE, BOB = Principal("alice"), Principal("bob")
BODY = {"code": "y = 1", "runtimeType": "Python"}


def test_a_co_publisher_removed_while_his_publish_runs_gets_no_version(azurite, monkeypatch):
    name = "Race" + uuid.uuid4().hex[:6]
    services.publish(ALICE, name, "v1", {**BODY, "coPublishers": ["bob"]})
    checked, done = services._check_name, []

    def removed_right_after_the_check(user, n):
        out = checked(user, n)
        if user is BOB and not done:
            done.append(1)
            services.patch(ALICE, name, "v1", {"coPublishers": []})  # alice's PATCH lands meanwhile
        return out

    monkeypatch.setattr(services, "_check_name", removed_right_after_the_check)
    with pytest.raises(Forbidden, match="no longer lists you"):
        services.publish(BOB, name, "v2", BODY)
    with pytest.raises(NotFound):
        services.get(name, "v2")
