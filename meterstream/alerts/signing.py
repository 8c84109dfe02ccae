"""Webhook signatures per the Standard Webhooks scheme, with its reference library.

Headers: `webhook-id` (the notification's id, the same on every attempt), `webhook-timestamp`
(seconds since the epoch, when the attempt was made) and `webhook-signature`:
`v1,<base64 of HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`. A secret is `whsec_` followed by
the base64 of the key. During a rotation two secrets are valid and the header carries two
signatures separated by a space; a receiver accepts the message if any of them matches.
Receivers verify with `standardwebhooks.Webhook(secret).verify(body, headers)`.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime

from standardwebhooks import Webhook

PREFIX = "whsec_"
KEY_BYTES = 32


def new_secret() -> str:
    """A fresh `whsec_` secret with a 256-bit random key."""
    return PREFIX + base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def signed_headers(
    secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three webhook headers, signed with every secret given (one, or two in rotation).

    The Standard Webhooks specification's own example:

    >>> signed_headers(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    ...                "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
    ...                b'{"test": 2432232314}')["webhook-signature"]
    'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='
    """
    moment = datetime.fromtimestamp(timestamp, UTC)
    text = body.decode()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            Webhook(secret).sign(msg_id, moment, text) for secret in secrets_
        ),
    }
