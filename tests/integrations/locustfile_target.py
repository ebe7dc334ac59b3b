"""The kit pointed at tests/integrations/locust_target.py: its own routes, no server hook."""

from __future__ import annotations

import random
import uuid

from integrations.locust import AnswerRules, IdempotentUser, Mix, Route

ACCOUNTS = ["alice", "bob", "carol"]


def transfer() -> dict[str, object]:
    source, destination = random.sample(ACCOUNTS, 2)
    return {"source": source, "destination": destination, "amount": random.randint(1, 500)}


class TransferClient(IdempotentUser):
    # The service stamps every answer outside its idempotency middleware: not a difference.
    rules = AnswerRules(ignore_fields=("served_at",))
    mix = Mix(duplicates=0.25, abandon=0.1, late_retry=0.25, reuse=0.25)
    routes = [
        Route("POST", "/transfers", body=transfer, weight=3),
        Route(
            "PATCH",
            "/accounts/{name}",
            params=lambda: {"name": random.choice(ACCOUNTS)},
            body=lambda: {"nickname": uuid.uuid4().hex[:8]},
        ),
    ]
