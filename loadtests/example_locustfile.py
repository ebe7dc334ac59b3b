import random
import uuid

from integrations.locust import IdempotentUser, Mix, Route


def payment() -> dict[str, object]:
    return {"payment_id": uuid.uuid4().hex, "amount": random.randint(100, 9_999)}


class PaymentClient(IdempotentUser):
    mix = Mix(duplicates=0.2, late_retry=0.2, reuse=0.2)
    routes = [Route("POST", "/payments", body=payment)]
