"""Makes clients/vectors/webhooks.json: webhook signature cases, signed by the reference library.

Every signature in the file is made by `meterstream.alerts.signing.signed_headers` (the alerts
service's own signer, which calls the Standard Webhooks reference library `standardwebhooks`),
every body by `meterstream.alerts.notifications.cloud_event` (the service's own notification
bytes), and each case is also verified with the reference library at the case's `now`: what it
does is recorded in `reference`. Where the SDKs decide otherwise (they are stricter, or the
library raises instead of refusing) the case says why in `differs`, and nowhere else may they
disagree. `expect` (the event, or the error code) is this project's contract for the SDKs.

    .venv/bin/python -m tests.clients.webhook_vectors     # writes the file

`tests/clients/test_vectors_python.py` fails when the file is not what this module makes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import standardwebhooks.webhooks as reference
from standardwebhooks import Webhook

from meterstream.alerts.notifications import NotificationType, cloud_event
from meterstream.alerts.signing import signed_headers

PATH = Path(__file__).resolve().parents[2] / "clients" / "vectors" / "webhooks.json"
TOLERANCE_S = 300

#: The Standard Webhooks specification's own example (https://www.standardwebhooks.com,
#: "Verifying webhooks"; also the doctest of meterstream.alerts.signing).
SPEC = {
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "timestamp": 1614265330,
    "body": '{"test": 2432232314}',
}
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

CODES = {
    "INVALID_SECRET": "the secret is not `whsec_` (optional) + standard base64 of a non-empty key",
    "MISSING_HEADER": "webhook-id, webhook-timestamp or webhook-signature is missing or empty",
    "INVALID_TIMESTAMP": "webhook-timestamp is not whole seconds (1 to 15 ASCII digits)",
    "TIMESTAMP_TOO_OLD": "webhook-timestamp is more than the tolerance before now",
    "TIMESTAMP_TOO_NEW": "webhook-timestamp is more than the tolerance after now",
    "NO_MATCHING_SIGNATURE": "no `v1,` signature of the header is the body's under the secret",
    "INVALID_BODY": (
        "the body is not UTF-8 (checked before the signature), not JSON, or not a "
        "CloudEvents 1.0 JSON object"
    ),
}

ORDER = (
    "The SDKs check, in this order: the secret; the three headers; the timestamp's form; "
    "the timestamp against now +- tolerance (`timestamp < now - tolerance` is too old, "
    "`timestamp > now + tolerance` too new: exactly the tolerance away is accepted); the "
    "body is UTF-8; a signature matches (the signed content is `<id>.<timestamp>.<body>` "
    "with the timestamp as its integer's decimal digits, HMAC-SHA256, base64; each entry "
    "of webhook-signature, separated by spaces, is `<version>,<base64>`, entries of another "
    "version or malformed ones are skipped, and a `v1` entry matches when its text equals "
    "the expected base64 exactly, compared in constant time); the body is a CloudEvent "
    "(a JSON object with string `specversion` '1.0', non-empty string `id`, `source` and "
    "`type`; `subject` a string or null; `time` and `datacontenttype` strings; `data` an "
    "object or null; each may be absent but the first four). Header names are "
    "case-insensitive; a header given several times counts by its first value."
)


def key(label: str) -> str:
    """A fixed `whsec_` secret for the vectors: the base64 of SHA-256 of `label`."""
    return "whsec_" + base64.b64encode(hashlib.sha256(label.encode()).digest()).decode()


SECRET = key("meterstream webhook vectors: the endpoint's secret")
OLD_SECRET = key("meterstream webhook vectors: the secret before the rotation")
OTHER_SECRET = key("meterstream webhook vectors: another endpoint's secret")
#: A key whose standard base64 has `+` and `/`, written in URL-safe base64 (`-`, `_`).
URLSAFE_SECRET = "whsec_" + base64.urlsafe_b64encode(b"\x01\xfb\xff" * 11).decode()
NOW = 1_794_647_553  # 2026-11-14T09:12:33Z
MSG_ID = "8c7b5a3e-4a8f-4c1e-9a51-3f0b2d7c6e10"


def moment(seconds: int) -> datetime:
    """An epoch second as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, UTC)


THRESHOLD = cloud_event(
    MSG_ID,
    NotificationType.THRESHOLD_REACHED,
    "acct-42",
    {
        "organisation": "acme",
        "rule_id": "0b6f4f7e-2f1c-4a63-8d0e-5a9f7c3e2b11",
        "rule_name": "large-model tokens",
        "account_id": "acct-42",
        "meter": "llm_tokens",
        "segment": {"model": "large"},
        "period_start": "2026-11-01",
        "threshold": "5000",
        "quantity": "5012",
        "recurring": False,
        "passed_thresholds": 0,
        "last_arrived_at": "2026-11-14T09:12:32.530+00:00",
        "figure_updated_at": "2026-11-14T09:12:32.790+00:00",
    },
    moment(NOW),
)
HEALTH_ID = "1d2e3f40-5a6b-4c7d-8e9f-a0b1c2d3e4f5"
HEALTH = cloud_event(
    HEALTH_ID,
    NotificationType.JOB_NOT_RUNNING_REACHED,
    None,  # type: ignore[arg-type]  # a health condition of the pipeline has no subject
    {
        "organisation": "operator",
        "rule_id": "7a1c9e2d-3b4f-4d5e-8f60-718293a4b5c6",
        "rule_name": "job down",
        "condition": "job_not_running",
        "state": "reached",
        "subject": None,
        "since": "2026-11-14T09:11:58.000+00:00",
        "value": "FAILED",
        "details": {"job_name": "meterstream-aggregate"},
    },
    moment(NOW),
)
UNICODE_ID = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
UNICODE = cloud_event(
    UNICODE_ID,
    NotificationType.THRESHOLD_REACHED,
    "café-Zürich-東京",
    {"organisation": "acme", "rule_name": "Überschreitung ✓", "threshold": "1", "quantity": "1"},
    moment(NOW),
)


def headers(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The alerts service's own signed headers."""
    return signed_headers(secrets, msg_id, timestamp, body)


def case(
    name: str,
    *,
    body: bytes,
    hdrs: dict[str, str],
    expect: dict[str, Any],
    secret: str = SECRET,
    now: int = NOW,
    tolerance_s: int | None = None,
    differs: str | None = None,
) -> dict[str, Any]:
    """One verification case, with what the reference library does with it."""
    out: dict[str, Any] = {"name": name, "secret": secret, "now": now}
    if tolerance_s is not None:
        out["tolerance_s"] = tolerance_s
    out["headers"] = hdrs
    try:
        out["body"] = body.decode()
    except UnicodeDecodeError:
        out["body_base64"] = base64.b64encode(body).decode()
    out["expect"] = expect
    out["reference"] = reference_outcome(secret, hdrs, body, now, tolerance_s)
    if differs is not None:
        out["differs"] = differs
    ref = out["reference"]
    agrees = ref == "accepts" if "event" in expect else ref.startswith("refuses")
    if ref.startswith("not checked"):
        agrees = True
    if agrees == (differs is not None):
        msg = f"{name}: reference {out['reference']!r}, expect {expect}, differs {differs!r}"
        raise AssertionError(msg)
    return out


@contextmanager
def frozen(now: int) -> Iterator[None]:
    """The reference library's clock, at `now` (it reads `datetime.now` for the tolerance)."""

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Frozen:  # type: ignore[override]
            del tz
            return cls.fromtimestamp(now, UTC)

    with mock.patch.object(reference, "datetime", Frozen):
        yield


def reference_outcome(
    secret: str, hdrs: dict[str, str], body: bytes, now: int, tolerance_s: int | None
) -> str:
    """What `standardwebhooks.Webhook(secret).verify(body, headers)` does at `now`."""
    if tolerance_s not in (None, TOLERANCE_S):
        return "not checked: its tolerance is fixed at 5 minutes"
    try:
        with frozen(now):
            Webhook(secret).verify(body, hdrs)
    except (reference.WebhookVerificationError, reference.EmptyWebhookSecretError) as exc:
        return f"refuses: {exc}"
    except Exception as exc:  # noqa: BLE001 - recorded: where the library raises, not refuses
        return f"raises {type(exc).__name__}: {exc}"
    return "accepts"


def event(body: bytes) -> dict[str, Any]:
    """The CloudEvent a successful verification returns: the body's JSON."""
    return {"event": json.loads(body)}


def error(code: str) -> dict[str, Any]:
    """A verification that fails with `code`."""
    assert code in CODES, code
    return {"error": code}


def cases() -> list[dict[str, Any]]:
    """Every verification case, in the order of the file."""
    spec_headers = headers([SPEC["secret"]], SPEC["id"], SPEC["timestamp"], SPEC["body"].encode())
    assert spec_headers["webhook-signature"] == SPEC_SIGNATURE, spec_headers
    ok = headers([SECRET], MSG_ID, NOW, THRESHOLD)
    sig = ok["webhook-signature"]
    tampered = THRESHOLD.replace(b'"quantity":"5012"', b'"quantity":"5013"')
    assert tampered != THRESHOLD
    rotation = headers([SECRET, OLD_SECRET], MSG_ID, NOW, THRESHOLD)
    no_id = {k: v for k, v in ok.items() if k != "webhook-id"}
    no_ts = {k: v for k, v in ok.items() if k != "webhook-timestamp"}
    no_sig = {k: v for k, v in ok.items() if k != "webhook-signature"}
    spec_note = "the specification's example body is not a CloudEvent"
    no_type = b'{"specversion":"1.0","id":"x","source":"/meterstream/alerts"}'

    def at(seconds: int, body: bytes = THRESHOLD) -> dict[str, str]:
        return headers([SECRET], MSG_ID, seconds, body)

    return [
        case(
            "the specification's example: its signature matches, then its body is refused "
            "as not a CloudEvent (the signature is checked before the body)",
            secret=SPEC["secret"],
            now=SPEC["timestamp"],
            body=SPEC["body"].encode(),
            hdrs=spec_headers,
            expect=error("INVALID_BODY"),
            differs=f"{spec_note}; the library returns any JSON",
        ),
        case(
            "the specification's example with one digit of the body changed",
            secret=SPEC["secret"],
            now=SPEC["timestamp"],
            body=b'{"test": 2432232315}',
            hdrs=spec_headers,
            expect=error("NO_MATCHING_SIGNATURE"),
        ),
        case(
            "a threshold notification, as the alerts service signs it",
            body=THRESHOLD,
            hdrs=ok,
            expect=event(THRESHOLD),
        ),
        case(
            "a health notification with a null subject",
            body=HEALTH,
            hdrs=headers([SECRET], HEALTH_ID, NOW - 42, HEALTH),
            expect=event(HEALTH),
        ),
        case(
            "a body with non-ASCII characters: the signature is over its UTF-8 bytes",
            body=UNICODE,
            hdrs=headers([SECRET], UNICODE_ID, NOW, UNICODE),
            expect=event(UNICODE),
        ),
        case(
            "header names in any case",
            body=THRESHOLD,
            hdrs={"Webhook-Id": MSG_ID, "WEBHOOK-TIMESTAMP": str(NOW), "Webhook-Signature": sig},
            expect=event(THRESHOLD),
        ),
        case(
            "a secret without the whsec_ prefix is the same key",
            secret=SECRET.removeprefix("whsec_"),
            body=THRESHOLD,
            hdrs=ok,
            expect=event(THRESHOLD),
        ),
        case(
            "a tampered body (one quantity digit)",
            body=tampered,
            hdrs=ok,
            expect=error("NO_MATCHING_SIGNATURE"),
        ),
        case(
            "the body re-serialised with a trailing newline",
            body=THRESHOLD + b"\n",
            hdrs=ok,
            expect=error("NO_MATCHING_SIGNATURE"),
        ),
        case(
            "signed with another secret",
            secret=OTHER_SECRET,
            body=THRESHOLD,
            hdrs=ok,
            expect=error("NO_MATCHING_SIGNATURE"),
        ),
        case(
            "the signature of another message id",
            body=THRESHOLD,
            hdrs={**ok, "webhook-id": "8c7b5a3e-4a8f-4c1e-9a51-3f0b2d7c6e11"},
            expect=error("NO_MATCHING_SIGNATURE"),
        ),
        case(
            "a timestamp changed after signing (still within the tolerance)",
            body=THRESHOLD,
            hdrs={**ok, "webhook-timestamp": str(NOW - 1)},
            expect=error("NO_MATCHING_SIGNATURE"),
        ),
        case(
            "exactly the tolerance old is accepted",
            body=THRESHOLD,
            hdrs=at(NOW - TOLERANCE_S),
            expect=event(THRESHOLD),
        ),
        case(
            "one second more than the tolerance old",
            body=THRESHOLD,
            hdrs=at(NOW - TOLERANCE_S - 1),
            expect=error("TIMESTAMP_TOO_OLD"),
        ),
        case(
            "a replay a day later",
            body=THRESHOLD,
            now=NOW + 86_400,
            hdrs=ok,
            expect=error("TIMESTAMP_TOO_OLD"),
        ),
        case(
            "exactly the tolerance ahead is accepted",
            body=THRESHOLD,
            hdrs=at(NOW + TOLERANCE_S),
            expect=event(THRESHOLD),
        ),
        case(
            "one second more than the tolerance ahead",
            body=THRESHOLD,
            hdrs=at(NOW + TOLERANCE_S + 1),
            expect=error("TIMESTAMP_TOO_NEW"),
        ),
        case(
            "a tolerance of 60 s given: 61 s old",
            tolerance_s=60,
            body=THRESHOLD,
            hdrs=at(NOW - 61),
            expect=error("TIMESTAMP_TOO_OLD"),
        ),
        case(
            "a tolerance of 600 s given: 400 s old",
            tolerance_s=600,
            body=THRESHOLD,
            hdrs=at(NOW - 400),
            expect=event(THRESHOLD),
        ),
        case(
            "the timestamp is checked before the signature: old and tampered",
            body=tampered,
            hdrs=at(NOW - TOLERANCE_S - 1),
            expect=error("TIMESTAMP_TOO_OLD"),
        ),
        case(
            "rotation: two signatures, verified with the new secret",
            body=THRESHOLD,
            hdrs=rotation,
            expect=event(THRESHOLD),
        ),
        case(
            "rotation: two signatures, verified with the old secret",
            secret=OLD_SECRET,
            body=THRESHOLD,
            hdrs=rotation,
            expect=event(THRESHOLD),
        ),
        case(
            "rotation: two signatures, neither of this secret",
            secret=OTHER_SECRET,
            body=THRESHOLD,
            hdrs=rotation,
            expect=error("NO_MATCHING_SIGNATURE"),
        ),
        case(
            "rotation: the valid signature after two invalid ones",
            body=THRESHOLD,
            hdrs={
                **ok,
                "webhook-signature": " ".join(
                    [
                        headers([OTHER_SECRET], MSG_ID, NOW, THRESHOLD)["webhook-signature"],
                        headers([SECRET], MSG_ID, NOW, tampered)["webhook-signature"],
                        sig,
                    ]
                ),
            },
            expect=event(THRESHOLD),
        ),
        case(
            "entries of another version or malformed are skipped, a valid v1 one counts",
            body=THRESHOLD,
            hdrs={
                **ok,
                "webhook-signature": f" v2,{sig[3:]} v1  v1,not*base64 v1a,{sig[3:]} {sig} ",
            },
            expect=event(THRESHOLD),
            differs="the library raises ValueError on an entry without a comma (or empty)",
        ),
        case(
            "the right HMAC under another version",
            body=THRESHOLD,
            hdrs={**ok, "webhook-signature": "v1a," + sig[3:]},
            expect=error("NO_MATCHING_SIGNATURE"),
        ),
        case(
            "the right HMAC without its version",
            body=THRESHOLD,
            hdrs={**ok, "webhook-signature": sig[3:]},
            expect=error("NO_MATCHING_SIGNATURE"),
            differs="the library raises ValueError on an entry without a comma",
        ),
        case(
            "the right HMAC with junk after its base64",
            body=THRESHOLD,
            hdrs={**ok, "webhook-signature": sig + "!!"},
            expect=error("NO_MATCHING_SIGNATURE"),
            differs="the library's base64 decoder drops characters outside the alphabet",
        ),
        case("no webhook-id", body=THRESHOLD, hdrs=no_id, expect=error("MISSING_HEADER")),
        case("no webhook-timestamp", body=THRESHOLD, hdrs=no_ts, expect=error("MISSING_HEADER")),
        case("no webhook-signature", body=THRESHOLD, hdrs=no_sig, expect=error("MISSING_HEADER")),
        case(
            "an empty webhook-signature",
            body=THRESHOLD,
            hdrs={**ok, "webhook-signature": ""},
            expect=error("MISSING_HEADER"),
        ),
        case("no headers at all", body=THRESHOLD, hdrs={}, expect=error("MISSING_HEADER")),
        case(
            "a timestamp that is not a number",
            body=THRESHOLD,
            hdrs={**ok, "webhook-timestamp": "yesterday"},
            expect=error("INVALID_TIMESTAMP"),
        ),
        case(
            "a timestamp with a fraction",
            body=THRESHOLD,
            hdrs={**ok, "webhook-timestamp": f"{NOW}.5"},
            expect=error("INVALID_TIMESTAMP"),
            differs="the library reads any float and signs its floor",
        ),
        case(
            "a timestamp in milliseconds is far in the future",
            body=THRESHOLD,
            hdrs={**ok, "webhook-timestamp": f"{NOW}000"},
            expect=error("TIMESTAMP_TOO_NEW"),
        ),
        case(
            "leading zeros in the timestamp: the signature is over its integer",
            body=THRESHOLD,
            hdrs={**ok, "webhook-timestamp": f"00{NOW}"},
            expect=event(THRESHOLD),
        ),
        case(
            "an empty key (whsec_ alone)",
            secret="whsec_",  # noqa: S106 - malformed on purpose
            body=THRESHOLD,
            hdrs=ok,
            expect=error("INVALID_SECRET"),
        ),
        case(
            "a secret whose base64 has an impossible length",
            secret="whsec_abcde",  # noqa: S106 - malformed on purpose
            body=THRESHOLD,
            hdrs=ok,
            expect=error("INVALID_SECRET"),
            differs="the library raises binascii.Error",
        ),
        case(
            "a secret in URL-safe base64",
            secret=URLSAFE_SECRET,
            body=THRESHOLD,
            hdrs=ok,
            expect=error("INVALID_SECRET"),
            differs="the library drops `-` and `_`, then raises binascii.Error",
        ),
        case(
            "a secret pasted with a trailing newline",
            secret=SECRET + "\n",
            body=THRESHOLD,
            hdrs=ok,
            expect=error("INVALID_SECRET"),
            differs="the library drops the newline",
        ),
        case(
            "a malformed secret is reported even without headers",
            secret="whsec_",  # noqa: S106 - malformed on purpose
            body=THRESHOLD,
            hdrs={},
            expect=error("INVALID_SECRET"),
        ),
        case(
            "a signed body that is not JSON",
            body=b"threshold reached",
            hdrs=headers([SECRET], MSG_ID, NOW, b"threshold reached"),
            expect=error("INVALID_BODY"),
            differs="the library raises JSONDecodeError",
        ),
        case(
            "a signed body with text after its JSON object",
            body=THRESHOLD + b" {}",
            hdrs=headers([SECRET], MSG_ID, NOW, THRESHOLD + b" {}"),
            expect=error("INVALID_BODY"),
            differs="the library raises JSONDecodeError",
        ),
        case(
            "a signed JSON array",
            body=b"[" + THRESHOLD + b"]",
            hdrs=headers([SECRET], MSG_ID, NOW, b"[" + THRESHOLD + b"]"),
            expect=error("INVALID_BODY"),
            differs="the library returns any JSON",
        ),
        case(
            "a signed JSON object without a type",
            body=no_type,
            hdrs=headers([SECRET], MSG_ID, NOW, no_type),
            expect=error("INVALID_BODY"),
            differs="the library returns any JSON",
        ),
        case(
            "a signed JSON object of another CloudEvents version",
            body=THRESHOLD.replace(b'"specversion":"1.0"', b'"specversion":"0.3"'),
            hdrs=headers(
                [SECRET],
                MSG_ID,
                NOW,
                THRESHOLD.replace(b'"specversion":"1.0"', b'"specversion":"0.3"'),
            ),
            expect=error("INVALID_BODY"),
            differs="the library returns any JSON",
        ),
        case(
            "a body that is not UTF-8 is refused before its signature is checked",
            body=b'{"id":"\xff\xfe"}',
            hdrs=ok,
            expect=error("INVALID_BODY"),
            differs="the library raises UnicodeDecodeError",
        ),
    ]


def document() -> dict[str, Any]:
    """The whole of webhooks.json."""
    return {
        "about": (
            "verifyWebhook / VerifyWebhook / Webhooks.verify / verify_webhook(body, headers, "
            "secret, now, tolerance): the CloudEvent, or a typed error with one of `codes`. "
            "`now` is epoch seconds; `tolerance_s` is the default unless a case gives it. A "
            "body is UTF-8 text unless given as `body_base64`. `reference` is what the "
            "Standard Webhooks reference library does with the case; `differs` says why the "
            "SDKs decide otherwise. Made by tests/clients/webhook_vectors.py: do not edit."
        ),
        "order": ORDER,
        "tolerance_s": TOLERANCE_S,
        "codes": CODES,
        "specification_example": {**SPEC, "signature": SPEC_SIGNATURE},
        "cases": cases(),
    }


def render() -> str:
    """The file's text: indented by one space as the other vectors, non-ASCII as it is."""
    return json.dumps(document(), indent=1, ensure_ascii=False) + "\n"


def main() -> None:
    """Write clients/vectors/webhooks.json."""
    PATH.write_text(render())
    sys.stdout.write(f"wrote {PATH} ({len(document()['cases'])} cases)\n")


if __name__ == "__main__":
    main()
