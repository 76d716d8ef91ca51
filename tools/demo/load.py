"""Writing the demo city through the services' own code paths: the registry's org service and
its bulk import of registration cards (with their events), the projections filled by the
services' consumers catching up, then mobility's cards and links and the activities' party
workers, training, talks, service hours and funds, each through its service function under
an admin principal (so audit rows and events are what the API would have written).

Nothing here writes SQL into a table: the only reads are the org ids by code and the
member ids by the ID number's keyed hash, both from the registry."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import math
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, TextIO, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from common.auth import Principal, Role
from common.db import create_engine, make_sessionmaker
from common.events.consumer import Consumer, catch_up
from services.activities import consumers as activities_consumers
from services.activities import projections as activities_projections
from services.activities.dependencies import NotesCipher
from services.activities.models import ActivityType, AssignmentKind, AttendanceStatus
from services.activities.schemas import (
    ActivityCreate,
    AllocationCreate,
    AttendanceEntry,
    ExpenseCreate,
    RoleAssignmentCreate,
    TalkCreate,
    TrainingSessionCreate,
)
from services.activities.service import activities as activity_service
from services.activities.service import funds, hours, programs, talks, training
from services.activities.settings import ActivitiesSettings
from services.mobility import consumers as mobility_consumers
from services.mobility import projections as mobility_projections
from services.mobility.dependencies import FieldCrypto as MobilityCrypto
from services.mobility.models import Channel, Direction, LinkMode, Rating
from services.mobility.schemas import (
    CardCreate,
    ContactCreate,
    ExternalUnit,
    FeedbackCreate,
    LinkCreate,
)
from services.mobility.service import cards, links
from services.mobility.settings import MobilitySettings
from services.registry import consumers as registry_consumers
from services.registry.dependencies import FieldCrypto as RegistryCrypto
from services.registry.models import AreaLevel, Member, Org, OrgKind
from services.registry.schemas.orgs import OrgCreate
from services.registry.service.imports import import_members
from services.registry.service.member_card import ID_NUMBER
from services.registry.service.orgs import create_org
from services.registry.settings import RegistrySettings
from tools.demo import geography as geo
from tools.demo.plan import TALKS_SHUIYUETING, Meeting, Person, Plan, build

DEMO = Principal(subject="demo", role=Role.admin, username="demo")
IMPORT_CHUNK = 3_000
BATCH = 400  # service calls per transaction
CHINA = timezone(timedelta(hours=8))
HEADER = [
    "name",
    "gender",
    "birth_date",
    "id_number",
    "ethnicity",
    "phone",
    "education",
    "joined_on",
    "membership",
    "category",
    "relation",
    "org_code",
    "residence_org_code",
    "group_code",
    "address",
    "employer",
    "skills",
]
T = TypeVar("T")


class Progress:
    """A plain-text progress bar: redrawn in place on a terminal, a line per stage
    otherwise (logs, tests)."""

    WIDTH = 30

    def __init__(self, total: int, out: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.stage = ""
        self.started = time.monotonic()

    def begin(self, stage: str) -> None:
        if self.stage and not self.tty:
            self._line()
        self.stage = stage
        self._draw()

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        if self.tty:
            self._draw()

    def finish(self) -> None:
        self.done = self.total
        if self.tty:
            self._draw()
            self.out.write("\n")
        else:
            self._line()
        self.out.flush()

    def _bar(self) -> str:
        filled = round(self.WIDTH * self.done / self.total)
        pct = 100 * self.done / self.total
        elapsed = time.monotonic() - self.started
        return f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {pct:5.1f}% {elapsed:5.1f}s"

    def _draw(self) -> None:
        if self.tty:
            self.out.write(f"\r{self._bar()}  {self.stage:<40}")
            self.out.flush()

    def _line(self) -> None:
        self.out.write(f"{self._bar()}  {self.stage}\n")
        self.out.flush()


@dataclass
class Loaded:
    plan: Plan
    org_ids: dict[str, uuid.UUID]
    member_ids: dict[int, uuid.UUID]  # person index → member id
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def city_id(self) -> uuid.UUID:
        return self.org_ids[self.plan.city_code]


async def city_exists(sessionmaker: async_sessionmaker[AsyncSession], code: str = "JX") -> bool:
    async with sessionmaker() as session:
        return await session.scalar(select(col(Org.id)).where(col(Org.code) == code)) is not None


async def registry_is_empty(sessionmaker: async_sessionmaker[AsyncSession]) -> bool:
    async with sessionmaker() as session:
        return await session.scalar(select(col(Org.id)).limit(1)) is None


async def _in_batches(
    sessionmaker: async_sessionmaker[AsyncSession],
    items: Iterable[T],
    step: Callable[[AsyncSession, T], Awaitable[None]],
) -> None:
    """One transaction per `BATCH` service calls."""
    pending = list(items)
    for start in range(0, len(pending), BATCH):
        async with sessionmaker() as session, session.begin():
            for item in pending[start : start + BATCH]:
                await step(session, item)


async def _catch_up(sessionmaker: async_sessionmaker[AsyncSession], found: list[Consumer]) -> None:
    for consumer in found:
        await catch_up(sessionmaker, consumer)


def _projections() -> list[Consumer]:
    """The mobility and activities consumers of the registry, the read models applying runs
    of member events in bulk (`RegistryProjection.apply_batch`: the same rows, in order, in
    a few round trips: the import's 18,165 `member.registered` otherwise take minutes)."""
    bulk = {
        mobility_projections.registry_consumer().name: mobility_projections.registry_model,
        activities_projections.registry_consumer().name: activities_projections.registry_model,
    }
    found = []
    for consumer in [*mobility_consumers.consumers(), *activities_consumers.consumers()]:
        model = bulk.get(consumer.name)
        if model is not None:
            consumer = dataclasses.replace(
                consumer, apply_batch=model.apply_batch, batch_size=2_000
            )
        found.append(consumer)
    return found


async def with_sessionmaker(
    url: str, use: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]
) -> T:
    engine = create_engine(url, pool_size=1, application_name="lianxin-demo")
    try:
        return await use(make_sessionmaker(engine))
    finally:
        await engine.dispose()


async def load(
    url: str, *, seed: int = 2004, year: int = 2003, out: TextIO | None = None
) -> Loaded | None:
    """Build the city into the (migrated) database at `url`; None when it is there already."""
    engine = create_engine(url, pool_size=3, application_name="lianxin-demo")
    try:
        sm = make_sessionmaker(engine)
        if await city_exists(sm):
            return None
        return await load_into(sm, seed=seed, year=year, out=out)
    finally:
        await engine.dispose()


async def load_into(
    sm: async_sessionmaker[AsyncSession], *, seed: int, year: int, out: TextIO | None = None
) -> Loaded:
    started = time.monotonic()
    plan = build(seed, year)
    rng = random.Random(f"{seed}:{year}:activity")  # noqa: S311 - demo data, not secrets
    flows = [p for p in plan.people if p.flow]
    residents = [p for p in plan.people if p.category == "in_service_resident"]
    workers = [p for p in plan.people if p.worker]
    total = len(plan.orgs) + len(plan.people) + 2 * len(flows) + 2 * len(residents)
    total += 2 * len(workers) + 3_000 + 3 * len(plan.communities) + 2_000
    total += len(plan.meetings)
    progress = Progress(total, out)
    loaded = Loaded(plan=plan, org_ids={}, member_ids={})

    progress.begin("registry: organizations")
    await _orgs(sm, loaded, progress)
    progress.begin("registry: members (bulk import)")
    await _members(sm, loaded, progress)
    progress.begin("projections: mobility and activities catch up")
    await _catch_up(sm, _projections())
    progress.advance(1_000)
    # Mobility and activities are independent here: written side by side (each its own
    # random stream, so the order of their interleaving changes nothing).
    progress.begin("mobility and activities: cards, links, party workers, org life, hours")
    await asyncio.gather(
        _mobility(sm, loaded, random.Random(f"{seed}:{year}:mobility"), progress),  # noqa: S311
        _activities(sm, loaded, rng, progress),
    )
    progress.begin("registry: members' status follows their cards")
    await _catch_up(sm, registry_consumers.consumers())
    await _catch_up(sm, _projections())
    progress.advance(1_000)
    progress.begin("activities: funds at 10-20 yuan per member")
    await _funds(sm, loaded, rng, progress)
    progress.begin("done")
    progress.finish()
    loaded.seconds = time.monotonic() - started
    return loaded


async def _mobility(
    sm: async_sessionmaker[AsyncSession], loaded: Loaded, rng: random.Random, progress: Progress
) -> None:
    await _flows(sm, loaded, rng, progress)
    await _links(sm, loaded, rng, progress)


async def _activities(
    sm: async_sessionmaker[AsyncSession], loaded: Loaded, rng: random.Random, progress: Progress
) -> None:
    await _workers(sm, loaded, rng, progress)
    await _community_life(sm, loaded, rng, progress)
    await _org_life(sm, loaded, progress)


# --- registry ------------------------------------------------------------------------------


async def _orgs(sm: async_sessionmaker[AsyncSession], loaded: Loaded, progress: Progress) -> None:
    ids = loaded.org_ids

    async def step(session: AsyncSession, o: Any) -> None:
        org = await create_org(
            session,
            data=OrgCreate(
                code=o.code,
                name=o.name,
                kind=OrgKind(o.kind),
                area_level=AreaLevel(o.area_level),
                parent_id=ids[o.parent] if o.parent else None,
            ),
            principal=DEMO,
        )
        ids[o.code] = org.id
        progress.advance(1)

    await _in_batches(sm, loaded.plan.orgs, step)
    loaded.counts["orgs"] = len(ids)


def _row(p: Person) -> list[str]:
    return [
        p.name,
        p.gender,
        p.birth_date.isoformat(),
        p.id_number,
        p.ethnicity,
        p.phone or "",
        p.education or "",
        p.joined_on.isoformat(),
        p.membership,
        p.category,
        p.relation,
        p.org_code or "",
        p.residence_code or "",
        p.group_code or "",
        p.address,
        p.employer or "",
        "、".join(p.skills),
    ]


async def _members(
    sm: async_sessionmaker[AsyncSession], loaded: Loaded, progress: Progress
) -> None:
    crypto = RegistryCrypto.from_settings(RegistrySettings())
    people = loaded.plan.people
    for start in range(0, len(people), IMPORT_CHUNK):
        chunk = people[start : start + IMPORT_CHUNK]
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(HEADER)
        writer.writerows(_row(p) for p in chunk)
        async with sm() as session, session.begin():
            outcome = await import_members(
                session,
                file=io.BytesIO(text.getvalue().encode()),
                filename="demo-city.csv",
                principal=DEMO,
                crypto=crypto,
                dry_run=False,
            )
        result = outcome.result
        if result.invalid or result.created != len(chunk):
            bad = [r for r in result.rows if r.errors][:3]
            raise RuntimeError(f"the demo import refused rows: {bad}")
        progress.advance(len(chunk))
    digests = {crypto.lookup.digest(p.id_number, purpose=ID_NUMBER): p.index for p in people}
    async with sm() as session:
        rows = await session.execute(
            select(col(Member.id), col(Member.id_number_hash)).where(
                col(Member.merged_into).is_(None)
            )
        )
        for member_id, digest in rows:
            if digest in digests:
                loaded.member_ids[digests[digest]] = member_id
    loaded.counts["members"] = len(loaded.member_ids)


# --- mobility ------------------------------------------------------------------------------


def _day_in(rng: random.Random, year: int, first_month: int = 1, last_month: int = 12) -> date:
    start = date(year, first_month, 1)
    end = date(year, last_month, 28)
    return start + timedelta(days=rng.randrange((end - start).days + 1))


async def _flows(
    sm: async_sessionmaker[AsyncSession], loaded: Loaded, rng: random.Random, progress: Progress
) -> None:
    """The year's 76 inflows and 264 outflows: each a card that left (or arrived) in the
    year; then contacts, returns, and some who fell silent."""
    settings = MobilitySettings()
    crypto = MobilityCrypto.from_settings(settings)
    days = settings.lost_contact_days
    plan, today = loaded.plan, date.today()
    people = [p for p in plan.people if p.flow]
    chosen: list[tuple[Person, str, date]] = []
    for p in people:
        fate = rng.random()
        outcome = "returned" if fate < 0.5 else ("in_touch" if fate < 0.9 else "silent")
        if p.flow == "inflow":
            outcome = "returned" if fate < 0.2 else "in_touch"
        chosen.append((p, outcome, _day_in(rng, plan.year)))
    workers_by_community: dict[int, str] = {}
    for w in plan.people:
        if w.worker:
            workers_by_community.setdefault(w.community, w.name)

    async def step(session: AsyncSession, item: tuple[Person, str, date]) -> None:
        p, outcome, left_on = item
        community = plan.communities[p.community]
        community_id = loaded.org_ids[community.code]
        inflow = p.flow == "inflow"
        tracker = workers_by_community.get(community.covered_by or community.index, "社区党支部")
        card = await cards.create_card(
            session,
            data=CardCreate(
                member_id=loaded.member_ids[p.index],
                direction=Direction.inflow if inflow else Direction.outflow,
                place=(p.home or "外地") if inflow else rng.choice(geo.DESTINATIONS),
                host_org_id=community_id if inflow else None,
                left_on=left_on,
                expected_return_on=left_on + timedelta(days=rng.choice((180, 365, 730))),
                contact_phone=p.phone if p.phone and p.phone.startswith("1") else None,
                tracker=tracker,
            ),
            principal=DEMO,
            crypto=crypto,
            days=days,
        )
        first = min(left_on + timedelta(days=rng.randint(20, 90)), today)
        await cards.add_contact(
            session,
            card_id=card.id,
            data=ContactCreate(
                on=first,
                channel=rng.choice(list(Channel)),
                attended_org_life=rng.random() < (0.8 if inflow else 0.4),
                notes="工作稳定，思想状况良好。" if rng.random() < 0.7 else "暂未参加组织生活。",
            ),
            principal=DEMO,
            crypto=crypto,
            days=days,
        )
        if outcome == "returned":
            back = min(first + timedelta(days=rng.randint(30, 400)), today)
            await cards.return_card(session, card_id=card.id, on=back, principal=DEMO, days=days)
        elif outcome == "in_touch":
            await cards.add_contact(
                session,
                card_id=card.id,
                data=ContactCreate(
                    on=today - timedelta(days=rng.randint(3, 120)),
                    channel=Channel.phone,
                    attended_org_life=inflow or rng.random() < 0.5,
                    notes="电话联系，近况良好。",
                ),
                principal=DEMO,
                crypto=crypto,
                days=days,
            )
        progress.advance(1)

    await _in_batches(sm, chosen, step)
    async with sm() as session, session.begin():
        await cards.publish_lost_contacts(session, days=days)
    progress.advance(len(chosen))
    loaded.counts["inflow"] = sum(p.flow == "inflow" for p in people)
    loaded.counts["outflow"] = sum(p.flow == "outflow" for p in people)


async def _links(
    sm: async_sessionmaker[AsyncSession], loaded: Loaded, rng: random.Random, progress: Progress
) -> None:
    """Every in-service resident linked with the workplace; most reported. 如意社区 above
    90%, the others between about a third and 85%."""
    plan = loaded.plan
    ruyi = plan.community("如意社区").index
    by_community: dict[int, list[Person]] = {}
    for p in plan.people:
        if p.category == "in_service_resident":
            by_community.setdefault(p.community, []).append(p)
    items: list[tuple[Person, bool]] = []
    for index, people in sorted(by_community.items()):
        n = len(people)
        rate = 0.95 if index == ruyi else rng.uniform(0.35, 0.85)
        reported = set(rng.sample(range(n), math.floor(rate * n) if index != ruyi else n - n // 20))
        items.extend((p, k in reported) for k, p in enumerate(people))
    if sum(1 for p, _ in items if p.community == ruyi) < 10:
        raise RuntimeError("the plan put too few in-service residents in 如意社区")
    year = plan.year

    async def step(session: AsyncSession, item: tuple[Person, bool]) -> None:
        p, reported = item
        external = (
            ExternalUnit(name=p.workplace_external[0], code=p.workplace_external[1])
            if p.workplace_external
            else None
        )
        link = await links.create_link(
            session,
            data=LinkCreate(
                member_id=loaded.member_ids[p.index],
                workplace_org_id=loaded.org_ids[p.workplace_code] if p.workplace_code else None,
                workplace_external=external,
                residence_org_id=loaded.org_ids[plan.communities[p.community].code],
                mode=rng.choices(list(LinkMode), (6, 3, 1))[0],
            ),
            principal=DEMO,
        )
        if reported:
            await links.report(
                session, link_id=link.id, on=_day_in(rng, year, 2, 11), principal=DEMO
            )
            if rng.random() < 0.3:
                await links.give_feedback(
                    session,
                    link_id=link.id,
                    data=FeedbackCreate(
                        year=year,
                        rating=rng.choices(list(Rating), (3, 5, 2, 0.3))[0],
                        comment="积极参加社区活动，认领楼道工作。",
                    ),
                    principal=DEMO,
                )
        progress.advance(2)

    await _in_batches(sm, items, step)
    loaded.counts["links"] = len(items)
    loaded.counts["reported"] = sum(r for _, r in items)


# --- activities ----------------------------------------------------------------------------


async def _workers(
    sm: async_sessionmaker[AsyncSession], loaded: Loaded, rng: random.Random, progress: Progress
) -> None:
    """Party workers (role assignments of kind `party_worker` in their community's org),
    the first of each community its secretary; about two in three trained in the three
    years up to the end of the year, at county training sessions."""
    plan = loaded.plan
    workers = sorted((p for p in plan.people if p.worker), key=lambda p: (p.community, p.index))
    seen: set[int] = set()
    items: list[tuple[Person, str, date]] = []
    for p in workers:
        role = "党务工作者" if p.community in seen else "社区党组织书记"
        seen.add(p.community)
        started = _day_in(rng, plan.year - rng.randint(0, 5), 1, 6)
        items.append((p, role, started))

    async def step(session: AsyncSession, item: tuple[Person, str, date]) -> None:
        p, role, started = item
        await programs.assign_role(
            session,
            principal=DEMO,
            data=RoleAssignmentCreate(
                member_id=loaded.member_ids[p.index],
                org_id=loaded.org_ids[plan.communities[p.community].code],
                kind=AssignmentKind.party_worker,
                role=role,
                started_on=started,
            ),
        )
        progress.advance(1)

    await _in_batches(sm, items, step)
    trained = [p for p in workers if rng.random() < 0.65]
    by_county: dict[str, list[Person]] = {}
    for p in trained:
        by_county.setdefault(plan.communities[p.community].county.code, []).append(p)
    async with sm() as session, session.begin():
        for code, people in sorted(by_county.items()):
            for k, year in enumerate((plan.year - 2, plan.year - 1, plan.year)):
                batch = people[k::3]
                if not batch:
                    continue
                await training.create_session(
                    session,
                    principal=DEMO,
                    data=TrainingSessionCreate(
                        org_id=loaded.org_ids[f"JX-{code}"],
                        title=f"{year}年社区党务工作者轮训班",
                        held_on=_day_in(rng, year, 3, 11),
                        hours=Decimal(16),
                        member_ids=[loaded.member_ids[p.index] for p in batch],
                    ),
                )
    progress.advance(len(workers))
    loaded.counts["party_workers"] = len(workers)
    loaded.counts["trained"] = len(trained)


async def _community_life(
    sm: async_sessionmaker[AsyncSession], loaded: Loaded, rng: random.Random, progress: Progress
) -> None:
    """Talks (水月亭社区: 188 in the year) and verified service hours."""
    plan, year = loaded.plan, loaded.plan.year
    cipher = NotesCipher.from_settings(ActivitiesSettings())
    enrolled: dict[int, list[Person]] = {}
    secretary: dict[int, str] = {}
    for p in plan.people:
        if p.relation == "enrolled" and p.flow is None:
            enrolled.setdefault(p.community, []).append(p)
        if p.worker:
            secretary.setdefault(p.community, p.name)
    shuiyueting = plan.community("水月亭社区").index
    talks_todo: list[tuple[Person, date, str]] = []
    hours_todo: list[tuple[Person, date, Decimal, str]] = []
    topics = ("下岗后的生活与再就业", "参加组织生活", "家庭困难", "邻里矛盾", "思想汇报")
    posts = ("治安巡逻", "楼道保洁", "绿地养护", "政策宣传", "便民服务", "结对帮困")
    for c in plan.communities:
        members = enrolled.get(c.index, [])
        if not members:
            continue
        if c.index == shuiyueting:
            n = TALKS_SHUIYUETING
        else:
            n = rng.randint(0, 1) if c.kind != "group" else 0
        talker = secretary.get(c.covered_by if c.covered_by is not None else c.index, "书记")
        for _ in range(n):
            talks_todo.append((rng.choice(members), _day_in(rng, year), talker))
        for p in rng.sample(members, min(len(members), rng.randint(1, 2))):
            hours_todo.append(
                (p, _day_in(rng, year), Decimal(rng.choice((1, 2, 2, 3, 4))), rng.choice(posts))
            )

    async def talk(session: AsyncSession, item: tuple[Person, date, str]) -> None:
        p, held_on, talker = item
        await talks.create_talk(
            session,
            data=TalkCreate(
                member_id=loaded.member_ids[p.index],
                held_on=held_on,
                talker=talker,
                topic=rng.choice(topics),
                notes="谈心谈话，了解思想和生活情况，帮助解决实际困难。",
            ),
            principal=DEMO,
            cipher=cipher,
        )
        progress.advance(1)

    async def serve(session: AsyncSession, item: tuple[Person, date, Decimal, str]) -> None:
        p, on, amount, post = item
        entry = await hours.log_hours(
            session,
            principal=DEMO,
            member_id=loaded.member_ids[p.index],
            on=on,
            hours=amount,
            role=post,
            description=f"{post}志愿服务",
        )
        await hours.verify(session, entry_id=entry["id"], principal=DEMO)
        progress.advance(2)

    await _in_batches(sm, talks_todo, talk)
    await _in_batches(sm, hours_todo, serve)
    loaded.counts["talks"] = len(talks_todo)
    loaded.counts["service_hours"] = len(hours_todo)


async def _org_life(
    sm: async_sessionmaker[AsyncSession], loaded: Loaded, progress: Progress
) -> None:
    """The plan's organizational life: each meeting an activity of its org with the
    attendance of those called to it (one `set_attendance` call), and for a volunteer
    service the hours of the present logged against it and verified."""
    plan = loaded.plan

    async def hold(session: AsyncSession, m: Meeting) -> None:
        starts = datetime(m.day.year, m.day.month, m.day.day, m.start_hour, tzinfo=CHINA)
        activity = await activity_service.create_activity(
            session,
            data=ActivityCreate(
                org_id=loaded.org_ids[m.org_code],
                type=ActivityType(m.type),
                title=m.title,
                starts_at=starts,
                ends_at=starts + timedelta(hours=float(m.hours)),
                location="社区党员活动室",
            ),
            principal=DEMO,
        )
        present = [index for index, status in m.attendance if status == "present"]
        await activity_service.set_attendance(
            session,
            activity_id=activity["id"],
            entries=[
                AttendanceEntry(
                    member_id=loaded.member_ids[index],
                    status=AttendanceStatus(status),
                    hours=m.hours if status == "present" else Decimal(0),
                )
                for index, status in m.attendance
            ],
            principal=DEMO,
        )
        if m.logs_hours:
            for index in present:
                entry = await hours.log_hours(
                    session,
                    principal=DEMO,
                    member_id=loaded.member_ids[index],
                    on=m.day,
                    hours=m.hours,
                    role="志愿服务",
                    activity_id=activity["id"],
                    description=m.title,
                )
                await hours.verify(session, entry_id=entry["id"], principal=DEMO)
        progress.advance(1)

    await _in_batches(sm, plan.meetings, hold)
    loaded.counts["org_life"] = len(plan.meetings)
    loaded.counts["attendance"] = sum(len(m.attendance) for m in plan.meetings)


async def _funds(
    sm: async_sessionmaker[AsyncSession], loaded: Loaded, rng: random.Random, progress: Progress
) -> None:
    """Each community party org's allocation for the year, at 10-20 yuan per member (the
    survey's rate), and part of it spent."""
    plan, year = loaded.plan, loaded.plan.year
    party = [c for c in plan.communities if c.kind != "group"]

    async def fund(session: AsyncSession, c: Any) -> None:
        org_id = loaded.org_ids[c.code]
        rate = Decimal(rng.choice((10, 12, 15, 15, 18, 20)))
        allocation = await funds.create_allocation(
            session,
            data=AllocationCreate(org_id=org_id, year=year, rate_per_member=rate),
            principal=DEMO,
        )
        spend = (allocation["amount"] * Decimal(rng.uniform(0.4, 0.95))).quantize(Decimal("0.01"))
        if spend > 0:
            await funds.book_expense(
                session,
                data=ExpenseCreate(
                    org_id=org_id,
                    year=year,
                    amount=spend,
                    purpose=rng.choice(("党员学习资料", "困难党员走访慰问", "七一主题党日")),
                ),
                principal=DEMO,
            )
        progress.advance(3)

    await _in_batches(sm, party, fund)
    loaded.counts["fund_allocations"] = len(party)
