"""Which accounts an organisation owns, as the API sees them: cached, never wrong for long."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import pytest

from meterstream.api import admin, context
from meterstream.api.context import AccountDirectory
from meterstream.api.store import Store
from meterstream.config import Settings
from tests.api.conftest import Tenant

pytestmark = pytest.mark.integration

TTL_S = 5.0


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(Store):
    """The real store, counting how often an organisation's list is read."""

    lists_read = 0

    async def organisation_accounts(self, org_id: str, limit: int) -> frozenset[str] | None:
        CountingStore.lists_read += 1
        return await super().organisation_accounts(org_id, limit)


def ask(
    stack: Settings,
    clock: Clock,
    questions: Iterable[tuple[str, list[str]]],
    step_s: float = 1.0,
) -> list[set[str]]:
    """Ask one directory (one open store) each question in turn, `step_s` apart."""

    async def run() -> list[set[str]]:
        store = CountingStore(stack, max_size=2)
        await store.open()
        try:
            directory = AccountDirectory(store, TTL_S, clock)
            answers = []
            for org_id, accounts in questions:
                answers.append(await directory.owned(org_id, accounts))
                clock.now += step_s
            return answers
        finally:
            await store.close()

    return asyncio.run(run())


def test_directory_answers_owned_foreign_and_unknown_accounts(
    stack: Settings, make_tenant: Callable[..., Tenant]
) -> None:
    ours, theirs = make_tenant(3), make_tenant(1)
    question = [*ours.accounts[:2], theirs.accounts[0], "acct-nobody-has-this"]

    answers = ask(stack, Clock(), [(ours.org_id, question), (ours.org_id, question)])

    assert answers == [set(ours.accounts[:2])] * 2


def test_directory_sees_an_account_added_after_it_read_the_list(
    stack: Settings, make_tenant: Callable[..., Tenant]
) -> None:
    tenant = make_tenant(2)
    added = f"{tenant.accounts[0]}-later"
    clock = Clock()

    def questions() -> Iterable[tuple[str, list[str]]]:
        yield tenant.org_id, tenant.accounts  # the organisation's list is read now
        admin.add_accounts(stack, tenant.org_id, [added])
        yield tenant.org_id, [added]  # within the TTL: not in the cached list, looked up

    assert ask(stack, clock, questions()) == [set(tenant.accounts), {added}]


def test_directory_forgets_a_removed_account_after_the_ttl(
    stack: Settings, make_tenant: Callable[..., Tenant]
) -> None:
    tenant, other = make_tenant(2), make_tenant(0)
    moved = tenant.accounts[1]
    clock = Clock()

    def questions() -> Iterable[tuple[str, list[str]]]:
        yield tenant.org_id, tenant.accounts
        with admin._connect(stack) as conn:  # noqa: SLF001 - no command moves an account
            conn.execute(
                "UPDATE accounts SET org_id = %s WHERE account_id = %s", (other.org_id, moved)
            )
        yield tenant.org_id, tenant.accounts  # cached: still counted as the tenant's
        clock.now += TTL_S
        yield tenant.org_id, tenant.accounts
        yield other.org_id, [moved]

    answers = ask(stack, clock, questions())

    assert answers == [set(tenant.accounts)] * 2 + [{tenant.accounts[0]}, {moved}]


def test_directory_of_an_organisation_too_large_to_list_asks_per_account(
    stack: Settings, make_tenant: Callable[..., Tenant], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(context, "MAX_ORGANISATION_SET", 2)
    ours, theirs = make_tenant(3), make_tenant(1)
    question = [*ours.accounts, theirs.accounts[0]]

    answers = ask(stack, Clock(), [(ours.org_id, question), (theirs.org_id, question)])

    assert answers == [set(ours.accounts), set(theirs.accounts)]


def test_directory_keeps_many_organisations_lists_for_the_ttl(
    stack: Settings, make_tenant: Callable[..., Tenant]
) -> None:
    tenants = [make_tenant(1) for _ in range(12)]
    questions = [(t.org_id, t.accounts) for t in tenants] * 2
    CountingStore.lists_read = 0

    answers = ask(stack, Clock(), questions, step_s=0.0)

    assert answers == [set(t.accounts) for t in tenants] * 2
    assert CountingStore.lists_read == len(tenants)  # each list read once, none evicted
