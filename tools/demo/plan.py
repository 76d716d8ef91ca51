"""The demo city as data, before anything is written: every org, every member's
registration card, and who flows, links, talks, serves and works as a party worker.

Pure and deterministic: the same seed and year give the same plan (one `random.Random`).
The survey's figures are met by construction, as counts:

- orgs: 57 towns, 17 streets, 258 communities (140 under streets). A community with a party
  org of its own is a community node of kind `committee` (1), `general_branch` (63) or
  `branch` (168): 232. The other 26 are community nodes of kind `group`, placed under the
  neighbouring community whose org covers them (联合党支部): they count as communities and
  not as community party orgs, and their members fall in the covering org's subtree.
- 18,165 members: 8,191 retired (45.09%); ages at the end of the year ≤35 / 36–45 / 46–60 /
  >60 = 1,768 / 2,640 / 5,573 / 8,184 (the survey's shares sum to 100.12%; each is within
  0.04 points); education 13,320 / 3,460 / 1,317 and 68 unrecorded (the survey's 99.63%).
- 1,000 party workers: college and above 128, junior high or below 327; aged ≤35 220,
  ≥45 427 (none is exactly 45, so ≥45 is the 46–60 and >60 bands).
- flows in the year: 76 in, 264 out.
- organizational life in the year (`org_life`, a random stream of its own): each community
  party org holds `ORG_LIFE` meetings by type, each with the attendance of those called
  to it; the counts and the attendance figures follow from the plan exactly."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from services.registry.idnumber import check_character
from tools.demo import geography as geo

MEMBERS = 18_165
RETIRED = 8_191
AGE_BANDS = {"le_35": 1_768, "36_45": 2_640, "46_60": 5_573, "gt_60": 8_184}
EDUCATION = {"junior_high_or_below": 13_320, "senior_high": 3_460, "college_or_above": 1_317}
UNKNOWN_EDUCATION = MEMBERS - sum(EDUCATION.values())  # 68
PARTY_ORGS = {"committee": 1, "general_branch": 63, "branch": 168}
COVERED = 26
WORKERS = 1_000
WORKER_AGES = {"le_35": 220, "36_45": 353, "46_60": 380, "gt_60": 47}
WORKER_EDUCATION = {"college_or_above": 128, "senior_high": 545, "junior_high_or_below": 327}
INFLOW, OUTFLOW = 76, 264
BUILDING_GROUPS_NANHETOU = 77
TALKS_SHUIYUETING = 188
RUYI_IN_SERVICE = 30  # in-service residents placed in 如意社区 on top of the dealt ones
QINGHUA_INFLOW = 15  # inflows hosted by 清华社区 ("外来民工党员之家")
RATES = (10, 12, 15, 15, 18, 20)  # yuan per member per year

# Organizational life per community party org in the year. The survey finds it thin and
# occasional in 2003 (集中短期的轰动性活动; laid-off and mobile members rarely attend): a
# year-end party committee meeting (支委: its party workers), a 七一 party lecture and theme
# day for the members called to them, and in the urban communities a volunteer service
# whose present members log its hours. Bounded by the load time: each meeting is a
# `create_activity` and a `set_attendance` (~8 ms, and ~1 ms per attendance row).
ORG_LIFE = {"branch_committee": 1, "party_lecture": 1, "theme_day": 1, "volunteer_service": 1}
URBAN_ONLY = frozenset({"volunteer_service"})
CALLED = {"party_lecture": (8, 14), "theme_day": (6, 10), "volunteer_service": (3, 6)}
MEETING_HOURS = {
    "branch_committee": Decimal(2),
    "party_lecture": Decimal("1.5"),
    "theme_day": Decimal(3),
    "volunteer_service": Decimal(2),
}
PRESENT = {
    "branch_committee": 0.9,
    "party_lecture": 0.7,
    "theme_day": 0.8,
    "volunteer_service": 0.85,
}

AGE_RANGE = {"le_35": (19, 35), "36_45": (36, 45), "46_60": (46, 60), "gt_60": (61, 92)}


@dataclass
class OrgPlan:
    code: str
    name: str
    kind: str
    area_level: str
    parent: str | None


@dataclass
class Community:
    index: int
    code: str
    name: str
    county: geo.County
    place: str  # the street or town
    urban: bool
    kind: str = "branch"  # `group`: covered by the org of `covered_by`
    covered_by: int | None = None
    size: int = 0
    workers: int = 0
    groups: list[str] = field(default_factory=list)


@dataclass
class Person:
    index: int
    band: str
    age: int
    category: str = "other"
    worker: bool = False
    education: str | None = None
    community: int = -1
    name: str = ""
    gender: str = "male"
    birth_date: date = date(1970, 1, 1)
    id_number: str = ""
    phone: str | None = None
    ethnicity: str = "汉族"
    joined_on: date = date(1990, 1, 1)
    membership: str = "full"
    relation: str = "enrolled"
    org_code: str | None = None
    residence_code: str | None = None
    group_code: str | None = None
    address: str = ""
    employer: str | None = None
    skills: list[str] = field(default_factory=list)
    workplace_code: str | None = None  # a work-unit org node (in-service residents)
    workplace_external: tuple[str, str] | None = None
    flow: str | None = None  # "inflow" | "outflow" in the year
    home: str | None = None  # where an inflow member comes from


@dataclass
class Meeting:
    """One activity of organizational life (or volunteer service) and its attendance:
    (person index, status) with the meeting's hours for the present, none otherwise."""

    org_code: str
    type: str
    title: str
    day: date
    start_hour: int
    hours: Decimal
    attendance: list[tuple[int, str]]

    @property
    def logs_hours(self) -> bool:
        """Present members log the hours of a volunteer service (verified)."""
        return self.type == "volunteer_service"


@dataclass
class Plan:
    seed: int
    year: int
    orgs: list[OrgPlan]
    communities: list[Community]
    people: list[Person]
    city_code: str = "JX"
    units_code: str = "JX-JG"
    meetings: list[Meeting] = field(default_factory=list)

    def community(self, name: str) -> Community:
        return next(c for c in self.communities if c.name == name)


def _share_out(total: int, weights: list[float]) -> list[int]:
    """Integers proportional to `weights` summing exactly to `total` (largest remainder)."""
    whole = sum(weights)
    raw = [total * w / whole for w in weights]
    counts = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def build(seed: int = 2004, year: int = 2003) -> Plan:
    rng = random.Random(seed)  # noqa: S311 - demo data, not secrets
    orgs, communities = _orgs(rng)
    plan = Plan(seed=seed, year=year, orgs=orgs, communities=communities, people=[])
    _sizes(rng, plan)
    plan.people = _people(rng, plan)
    _cards(rng, plan)
    plan.meetings = org_life(plan)
    return plan


# --- the tree ----------------------------------------------------------------------------


def _orgs(rng: random.Random) -> tuple[list[OrgPlan], list[Community]]:
    orgs = [OrgPlan("JX", "中共嘉兴市委", "committee", "city", None)]
    communities: list[Community] = []
    used_names: set[str] = set()

    def community_name() -> str:
        while True:
            name = rng.choice(geo.COMMUNITY_WORDS) + rng.choice(geo.COMMUNITY_SUFFIXES) + "社区"
            if name not in used_names:
                used_names.add(name)
                return name

    for county in geo.COUNTIES:
        for street in county.streets:
            used_names.update(street.named)
    for county in geo.COUNTIES:
        ccode = f"JX-{county.code}"
        orgs.append(OrgPlan(ccode, f"中共{county.name}委", "committee", "county", "JX"))
        places: list[tuple[str, str, bool, int, tuple[str, ...]]] = []
        for n, street in enumerate(county.streets, start=1):
            places.append(
                (f"{ccode}-S{n:02d}", street.name, True, street.communities, street.named)
            )
        for n, (town, count) in enumerate(zip(county.towns, county.town_communities, strict=True)):
            places.append((f"{ccode}-T{n + 1:02d}", town, False, count, ()))
        for pcode, pname, urban, count, named in places:
            if urban:
                orgs.append(OrgPlan(pcode, f"{pname}党工委", "working_committee", "street", ccode))
            else:
                orgs.append(OrgPlan(pcode, f"{pname}党委", "committee", "town", ccode))
            for k in range(count):
                name = named[k] if k < len(named) else community_name()
                communities.append(
                    Community(
                        index=len(communities),
                        code=f"{pcode}-C{k + 1:02d}",
                        name=name,
                        county=county,
                        place=pname,
                        urban=urban,
                    )
                )
    return orgs, communities


def _sizes(rng: random.Random, plan: Plan) -> None:
    """Who is covered by a neighbour, how many members each community has, its kind, its
    party workers and building groups; then the org rows of communities and groups."""
    cs = plan.communities
    named = {"南河头社区": 480.0, "水月亭社区": 170.0, "如意社区": 120.0, "清华社区": 110.0}
    # Covered: a later community of a town with more than one (its first one covers it).
    by_place: dict[str, list[Community]] = {}
    for c in cs:
        by_place.setdefault(c.code.rsplit("-", 1)[0], []).append(c)
    candidates = [
        group[k] for group in by_place.values() if not group[0].urban for k in range(1, len(group))
    ]
    for c in rng.sample(candidates, COVERED):
        c.kind = "group"
        c.covered_by = by_place[c.code.rsplit("-", 1)[0]][0].index
    weights = []
    for c in cs:
        if c.kind == "group":
            weights.append(rng.uniform(4, 12))
        elif c.name in named:
            weights.append(named[c.name])
        else:
            weights.append(rng.lognormvariate(math.log(85 if c.urban else 55), 0.35))
    for c, size in zip(cs, _share_out(MEMBERS, weights), strict=True):
        c.size = max(size, 1)
    assert sum(c.size for c in cs) == MEMBERS
    party = sorted((c for c in cs if c.kind != "group"), key=lambda c: (-c.size, c.index))
    nanhetou = next(c for c in party if c.name == "南河头社区")
    nanhetou.kind = "committee"
    rest = [c for c in party if c is not nanhetou]
    for c in rest[: PARTY_ORGS["general_branch"]]:
        c.kind = "general_branch"
    for c in rest[PARTY_ORGS["general_branch"] :]:
        c.kind = "branch"
    extra = _share_out(WORKERS - 3 * len(party), [float(c.size) for c in party])
    for c, more in zip(party, extra, strict=True):
        c.workers = 3 + more
    # Org rows: communities under their street or town, covered ones under their neighbour.
    suffix = {"committee": "党委", "general_branch": "党总支", "branch": "党支部", "group": ""}
    for c in cs:
        parent = cs[c.covered_by].code if c.covered_by is not None else c.code.rsplit("-", 1)[0]
        label = f"{c.name}{suffix[c.kind]}" if c.kind != "group" else f"{c.name}（联合党支部覆盖）"
        plan.orgs.append(OrgPlan(c.code, label, c.kind, "community", parent))
    for c in cs:
        if c.kind == "group":
            continue
        if c is nanhetou:
            count = BUILDING_GROUPS_NANHETOU
        elif c.urban:
            count = max(1, min(8, round(c.size / rng.uniform(30, 40))))
        else:
            count = rng.randint(0, 2)
        for n in range(1, count + 1):
            code = f"{c.code}-B{n:02d}"
            c.groups.append(code)
            plan.orgs.append(OrgPlan(code, f"{c.name}{n}号楼党小组", "group", "building", c.code))
    plan.orgs.append(
        OrgPlan(
            plan.units_code, "中共嘉兴市直属机关工作委员会", "working_committee", "work_unit", None
        )
    )
    for n, unit in enumerate(geo.WORK_UNITS, start=1):
        kind = (
            "committee"
            if unit.endswith("党委")
            else ("general_branch" if unit.endswith("党总支") else "branch")
        )
        plan.orgs.append(
            OrgPlan(f"{plan.units_code}-U{n:02d}", unit, kind, "work_unit", plan.units_code)
        )


# --- the people ---------------------------------------------------------------------------


def _age(rng: random.Random, band: str, *, worker: bool) -> int:
    low, high = AGE_RANGE[band]
    if worker and band == "36_45":
        high = 44  # party workers "≥45" are the bands above 45
    if band == "gt_60":
        return min(high, low + int(rng.expovariate(1 / 9)))
    return rng.randint(low, high)


def _people(rng: random.Random, plan: Plan) -> list[Person]:
    people: list[Person] = []
    # Party workers first, with the survey's own shares.
    for band, count in WORKER_AGES.items():
        for _ in range(count):
            people.append(Person(len(people), band, _age(rng, band, worker=True), worker=True))
    for band, total in AGE_BANDS.items():
        for _ in range(total - WORKER_AGES[band]):
            people.append(Person(len(people), band, _age(rng, band, worker=False)))
    workers = people[:WORKERS]
    others = people[WORKERS:]
    # Categories.
    for p in workers:
        retired = p.band == "gt_60" or (p.band == "46_60" and rng.random() < 0.3)
        p.category = "retired" if retired else "community_staff"
    retired_left = RETIRED - sum(p.category == "retired" for p in workers)
    old = [p for p in others if p.band == "gt_60"]
    middle = [p for p in others if p.band == "46_60" and p.age >= 50]
    from_middle = 390
    for p in rng.sample(old, retired_left - from_middle) + rng.sample(middle, from_middle):
        p.category = "retired"
    weights = {
        "le_35": {"new_economic_org": 30, "migrant_worker": 18, "in_service_resident": 8,
                  "laid_off": 5, "community_staff": 5, "other": 15},
        "36_45": {"new_economic_org": 22, "migrant_worker": 8, "in_service_resident": 8,
                  "laid_off": 22, "community_staff": 5, "rural_to_urban": 6, "other": 7},
        "46_60": {"new_economic_org": 10, "in_service_resident": 6, "laid_off": 35,
                  "community_staff": 4, "rural_to_urban": 16, "other": 10},
        "gt_60": {"rural_to_urban": 40, "other": 60},
    }  # fmt: skip
    for p in others:
        if p.category == "retired":
            continue
        table = weights[p.band]
        p.category = rng.choices(list(table), weights=list(table.values()))[0]
    # Education: the younger and the in-service more often schooled longer.
    _educate(rng, workers, WORKER_EDUCATION, unknown=0)
    rest_education = {k: EDUCATION[k] - WORKER_EDUCATION[k] for k in EDUCATION}
    _educate(rng, others, rest_education, unknown=UNKNOWN_EDUCATION)
    return people


def _educate(
    rng: random.Random, people: list[Person], counts: dict[str, int], *, unknown: int
) -> None:
    unrecorded = {p.index for p in rng.sample(people, unknown)}
    bonus = {"in_service_resident": 18, "new_economic_org": 8, "community_staff": 6}
    ranked = sorted(
        (p for p in people if p.index not in unrecorded),
        key=lambda p: -p.age + bonus.get(p.category, 0) + rng.gauss(0, 12),
        reverse=True,
    )
    high, senior = counts["college_or_above"], counts["senior_high"]
    for n, p in enumerate(ranked):
        if n < high:
            p.education = rng.choices(("college", "bachelor", "postgraduate"), (62, 35, 3))[0]
        elif n < high + senior:
            p.education = "senior_high"
        else:
            p.education = "junior_high_or_below"


def _eighteenth(born: date) -> date:
    try:
        return born.replace(year=born.year + 18)
    except ValueError:  # 29 February
        return date(born.year + 18, 3, 1)


def _cards(rng: random.Random, plan: Plan) -> None:
    """Where each person lives and is enrolled, and the rest of the card."""
    cs, people, year = plan.communities, plan.people, plan.year
    workers = [p for p in people if p.worker]
    pool = [p for p in people if not p.worker]
    rng.shuffle(pool)
    party = [c for c in cs if c.kind != "group"]
    slots_of = {c.index: c.size for c in cs}
    # Party workers to the party orgs.
    rng.shuffle(workers)
    it = iter(workers)
    for c in party:
        for _ in range(c.workers):
            next(it).community = c.index
            slots_of[c.index] -= 1

    def take(category: str, n: int, community: Community, *, max_age: int = 200) -> list[Person]:
        chosen = [p for p in pool if p.category == category and p.age <= max_age][:n]
        for p in chosen:
            pool.remove(p)
            p.community = community.index
            slots_of[community.index] -= 1
        return chosen

    take("in_service_resident", RUYI_IN_SERVICE, plan.community("如意社区"))
    for p in take("migrant_worker", QINGHUA_INFLOW, plan.community("清华社区"), max_age=50):
        p.flow = "inflow"
    slots = [c.index for c in cs for _ in range(slots_of[c.index])]
    rng.shuffle(slots)
    for p, c_index in zip(pool, slots, strict=True):
        p.community = c_index
    # Flows: the rest of the inflow among young migrant workers, the outflow among the
    # enrolled of working age who are neither workers nor retired.
    inflow_pool = [
        p for p in people if p.category == "migrant_worker" and p.flow is None and p.age <= 50
    ]
    for p in rng.sample(sorted(inflow_pool, key=lambda p: p.index), INFLOW - QINGHUA_INFLOW):
        p.flow = "inflow"
    outflow_pool = [
        p
        for p in people
        if p.flow is None
        and not p.worker
        and p.age <= 50
        and p.category in ("laid_off", "new_economic_org", "other", "rural_to_urban")
    ]
    for p in rng.sample(outflow_pool, OUTFLOW):
        p.flow = "outflow"
    serials: dict[tuple[str, date], int] = {}
    end = date(year, 12, 31)
    for p in people:
        c = cs[p.community]
        p.gender = "male" if rng.random() < (0.58 if p.age > 45 else 0.5) else "female"
        surname = rng.choice(geo.SURNAMES)
        given = geo.GIVEN_MALE if p.gender == "male" else geo.GIVEN_FEMALE
        p.name = surname + "".join(rng.choice(given) for _ in range(rng.choice((1, 2, 2))))
        born_year = year - p.age
        p.birth_date = date(born_year, 1, 1) + timedelta(days=rng.randrange(365))
        region = c.county.region
        if p.flow == "inflow":
            region, p.home = rng.choice(geo.HOMES)
        key = (region, p.birth_date)
        serials[key] = serials.get(key, rng.randrange(5, 60)) + 1
        serial = 2 * serials[key] + (1 if p.gender == "male" else 0)
        body = f"{region}{p.birth_date:%Y%m%d}{serial:03d}"
        p.id_number = body + check_character(body)
        if p.age < 60 or rng.random() < 0.3:
            p.phone = f"1{rng.choice('3568')}{rng.randrange(10**9):09d}"
        elif rng.random() < 0.8:
            p.phone = f"0573-8{rng.randrange(10**6, 10**7)}"
        p.ethnicity = rng.choice(geo.ETHNICITIES)
        adult = _eighteenth(p.birth_date)
        latest = min(end - timedelta(days=30), adult + timedelta(days=365 * 45))
        span = max((latest - adult).days, 1)
        p.joined_on = adult + timedelta(days=int(span * rng.betavariate(2, 3)))
        if p.joined_on > end - timedelta(days=365) and rng.random() < 0.5:
            p.membership = "probationary"
        home = c  # a covered community's members are enrolled in its own (group) node
        if p.category == "in_service_resident":
            p.relation = "resident"
            p.residence_code = home.code
            if rng.random() < 0.6:
                n = rng.randrange(len(geo.WORK_UNITS))
                p.workplace_code = f"{plan.units_code}-U{n + 1:02d}"
                p.org_code = p.workplace_code
                p.employer = geo.WORK_UNITS[n].removesuffix("党委").removesuffix("党总支")
                p.employer = p.employer.removesuffix("机关党支部").removesuffix("党支部")
            else:
                p.workplace_external = rng.choice(geo.OUTSIDE_UNITS)
                p.employer = p.workplace_external[0]
        else:
            p.org_code = home.code
        if p.category == "new_economic_org" or (p.category == "migrant_worker"):
            p.employer = rng.choice(geo.COMPANIES)
        elif p.category == "community_staff":
            p.employer = f"{c.name}居民委员会"
        groups = cs[p.community].groups
        if groups and rng.random() < 0.8:
            p.group_code = rng.choice(groups)
        building = rng.randint(1, max(len(groups), 12))
        p.address = (
            f"嘉兴市{c.county.name}{c.place}{c.name}{building}幢"
            f"{rng.randint(1, 4)}单元{rng.randint(1, 6)}0{rng.randint(1, 4)}室"
        )
        if rng.random() < 0.35:
            p.skills = rng.sample(geo.SKILLS, rng.choice((1, 1, 2)))


# --- organizational life -------------------------------------------------------------------

TITLES = {
    "branch_committee": ("年终支委会：研究民主评议党员", "年终支委会：总结全年支部工作"),
    "party_lecture": ("七一党课：社区党员的先锋模范作用", "党课：学习贯彻党的十六大精神"),
    "theme_day": ("七一主题党日：重温入党誓词", "主题党日：走访困难党员"),
    "volunteer_service": (
        "党员志愿服务：楼道保洁",
        "党员志愿服务：便民服务",
        "党员志愿服务：治安巡逻",
    ),
}
MONTHS = {
    "branch_committee": ((12, 12),),
    "party_lecture": ((6, 7),),
    "theme_day": ((6, 7),),
    "volunteer_service": ((3, 11),),
}


def _status(rng: random.Random, p: Person, present: float) -> str:
    """Mobile members are excused; the laid-off and the migrant workers come less often."""
    if p.flow == "outflow":
        return "excused"
    if p.category in ("laid_off", "migrant_worker"):
        present -= 0.2
    roll = rng.random()
    if roll < present:
        return "present"
    return "excused" if roll < present + (1 - present) / 2 else "absent"


def org_life(plan: Plan) -> list[Meeting]:
    """Each community party org's meetings of the year (`ORG_LIFE`), deterministic from
    the plan's seed and year on a random stream of its own."""
    rng = random.Random(f"{plan.seed}:{plan.year}:org-life")  # noqa: S311 - demo data
    cs = plan.communities
    members: dict[int, list[Person]] = {}
    workers: dict[int, list[Person]] = {}
    for p in plan.people:
        if p.relation != "enrolled":
            continue
        c = cs[p.community]
        root = c.covered_by if c.covered_by is not None else c.index
        members.setdefault(root, []).append(p)
        if p.worker:
            workers.setdefault(root, []).append(p)
    meetings: list[Meeting] = []
    for c in cs:
        if c.kind == "group":
            continue
        for kind, n in ORG_LIFE.items():
            if kind in URBAN_ONLY and not c.urban:
                continue
            for k in range(n):
                first, last = MONTHS[kind][k % len(MONTHS[kind])]
                start = date(plan.year, first, 1)
                end = date(plan.year, last, 28)
                day = start + timedelta(days=rng.randrange((end - start).days + 1))
                if kind == "branch_committee":
                    called = workers.get(c.index, [])
                else:
                    pool = members.get(c.index, [])
                    low, high = CALLED[kind]
                    called = rng.sample(pool, min(len(pool), rng.randint(low, high)))
                called = sorted(called, key=lambda p: p.index)
                attendance = [(p.index, _status(rng, p, PRESENT[kind])) for p in called]
                title = rng.choice(TITLES[kind])
                hour = rng.choice((9, 14, 19)) if kind != "volunteer_service" else 8
                meetings.append(
                    Meeting(c.code, kind, title, day, hour, MEETING_HOURS[kind], attendance)
                )
    return meetings


def org_life_figures(meetings: list[Meeting], organizational: frozenset[str]) -> dict[str, Any]:
    """What the activities' statistics report of `meetings`: counts by type, the attendance
    rate (present / rows) over all of them and over organizational life, hours logged."""
    by_type: dict[str, int] = {}
    present = rows = life_present = life_rows = 0
    hours = Decimal(0)
    for m in meetings:
        by_type[m.type] = by_type.get(m.type, 0) + 1
        here = sum(status == "present" for _, status in m.attendance)
        present += here
        rows += len(m.attendance)
        if m.type in organizational:
            life_present += here
            life_rows += len(m.attendance)
        if m.logs_hours:
            hours += here * m.hours
    return {
        "activities_by_type": dict(sorted(by_type.items())),
        "activities": sum(by_type.values()),
        "attendance_rows": rows,
        "attendance_rate": round(present / rows, 4) if rows else None,
        "organizational_life_attendance_rate": (
            round(life_present / life_rows, 4) if life_rows else None
        ),
        "volunteer_hours": hours,
        "volunteer_entries": sum(
            sum(s == "present" for _, s in m.attendance) for m in meetings if m.logs_hours
        ),
    }
