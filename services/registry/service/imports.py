"""Importing registration cards from an xlsx or csv file (see `card_sheet` for the columns).

One request, one transaction. The file is read in chunks of rows; each row is checked by the
rules a single registration goes through (`MemberCreate`, `member_card.card_errors` and
`check_references`, the ID number's keyed hash) before anything is written, then matched
against the people already registered:

- a person (by ID number, else by name, birth date and org) registered with the same card is
  `unchanged` — re-importing a file changes nothing;
- one registered with other data is `invalid`, naming the existing record (never a second
  record of a person);
- the second row of one person in the same file is `invalid`;
- the rest are inserted in bulk (`created`; `valid` in a dry run), each with its
  `member.registered` event.

Bad rows never stop good ones; a file that cannot be read stops everything (422, nothing
written). Real runs take a transaction-scoped lock, so two imports never interleave."""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import IO, Any

from anyio import to_thread
from pydantic import ValidationError
from sqlalchemy import Date, LargeBinary, Text, func, select, text
from sqlalchemy import cast as cast_
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from common import audit
from common.auth import Principal
from common.errors import FieldError
from common.sharding import member_shard_key
from services.registry import idnumber
from services.registry.dependencies import FieldCrypto
from services.registry.errors import ImportInProgress, InvalidReference
from services.registry.events import emit_members_registered
from services.registry.models import Member, Org, Relation, audit_log
from services.registry.schemas.imports import ImportResult, ImportRow, ReportFormat, RowStatus
from services.registry.schemas.members import MemberCreate
from services.registry.service import shard_keys
from services.registry.service.card_sheet import (
    ERRORS_HEADER,
    Header,
    SheetFormat,
    SheetReader,
    SheetWriter,
    cell_date,
    cell_text,
    enum_choices,
    enum_value,
)
from services.registry.service.member_card import (
    CATEGORY_RELATION,
    ID_NUMBER,
    PHONE,
    OrgRef,
    card_errors,
    check_references,
    default_relation,
    fetch_org_refs,
    id_number_columns,
    phone_columns,
    renew_statistics,
    require_writer,
    resume_json,
)

log = logging.getLogger("lianxin.registry.imports")

CHUNK_ROWS = 1000
ROWS_IN_FULL = 1000
LOCK = "registry.member_import"
RETRY_AFTER_S = 5

# Card fields and the file columns naming the orgs they hold.
CODE_FIELDS = {
    "org_code": "org_id",
    "residence_org_code": "residence_org_id",
    "group_code": "group_id",
}
FIELD_COLUMNS = {v: k for k, v in CODE_FIELDS.items()}
TEXT_FIELDS = ("name", "ethnicity", "address", "employer")
ENUM_FIELDS = ("gender", "education", "membership", "category", "relation")
DATE_FIELDS = ("birth_date", "joined_on")
# Card columns compared with an existing record (each only when the file has its column).
COMPARED = (
    "name",
    "gender",
    "birth_date",
    "ethnicity",
    "education",
    "joined_on",
    "membership",
    "category",
    "relation",
    "org_id",
    "residence_org_id",
    "group_id",
    "address",
    "employer",
    "skills",
    "resume",
)
_MASKED_ID = re.compile(r"^\d{6}\*{8}\d{3}[\dX]$")
_SKILL_SPLIT = re.compile(r"[、,，;；\n]")
_RESUME_LINE = re.compile(r"^(\S+?)\s*[~～至]\s*(\S*?)\s+(.+)$")


@dataclass
class ImportOutcome:
    result: ImportResult
    report: bytes | None = None  # the rejected rows as a file, when asked for
    report_format: SheetFormat | None = None


@dataclass
class _Row:
    number: int
    cells: list[Any]
    values: dict[str, Any] = field(default_factory=dict)
    errors: list[FieldError] = field(default_factory=list)
    card: dict[str, Any] | None = None  # column values, once the row passed every rule
    id_number: str | None = None  # the full number
    id_masked: str | None = None  # a masked number (from an export)
    digest: bytes | None = None
    phone: str | None = None
    phone_masked: str | None = None
    status: RowStatus | None = None
    member_id: uuid.UUID | None = None

    def fail(self, column: str, message: str) -> None:
        self.errors.append(FieldError(field=column, message=message))

    @property
    def name_key(self) -> tuple[Any, ...]:
        assert self.card is not None
        card = self.card
        return (card["name"], card["birth_date"], card["org_id"], card["residence_org_id"])


# --- reading a row --------------------------------------------------------------------------


def _parse(number: int, cells: list[Any], header: Header) -> _Row:
    """A file row as field values (dates, enum values, codes, lists), with the errors of
    single cells. Pure: runs in a worker thread beside the file's parser."""
    row = _Row(number=number, cells=cells)
    for position, column in header.columns.items():
        if column.read_only:
            continue
        raw = cells[position] if position < len(cells) else None
        key = column.key
        if key == "id_number" and isinstance(raw, int | float) and not isinstance(raw, bool):
            row.fail(key, "is stored as a number, which loses digits: format the column as text")
            continue
        value = cell_text(raw)
        if value is None:
            continue
        if key in DATE_FIELDS:
            try:
                row.values[key] = cell_date(raw)
            except ValueError:
                row.fail(key, "is not a date (YYYY-MM-DD)")
        elif key in ENUM_FIELDS:
            found = enum_value(column, value)
            if found is None:
                row.fail(key, f"must be one of {enum_choices(column)}")
            row.values[key] = found
        elif key == "id_number" and "*" in value:
            if _MASKED_ID.match(value.upper()):
                row.id_masked = value.upper()
            else:
                row.fail(key, "is masked in an unknown way")
        elif key == "phone" and "*" in value:
            row.phone_masked = value
        elif key == "skills":
            row.values[key] = [s.strip() for s in _SKILL_SPLIT.split(value) if s.strip()]
        elif key == "resume":
            row.values[key] = _resume(value, row)
        else:
            row.values[key] = value
    return row


def _resume(value: str, row: _Row) -> list[dict[str, Any]]:
    """One entry a line: `1976-09-01~2013-03-31 毛纺厂工人` (`~` then nothing: ongoing)."""
    entries: list[dict[str, Any]] = []
    for n, line in enumerate((x.strip() for x in value.splitlines() if x.strip()), start=1):
        match = _RESUME_LINE.match(line)
        try:
            if match is None:
                raise ValueError(line)
            start, end, what = match.groups()
            entries.append(
                {
                    "from": cell_date(start),
                    "to": cell_date(end) if end else None,
                    "text": what,
                }
            )
        except ValueError:
            row.fail("resume", f"line {n} is not 'from~to text' (dates as YYYY-MM-DD)")
    return entries


def _read_chunk(rows: Iterator[tuple[int, list[Any]]], header: Header) -> list[_Row]:
    return [_parse(n, cells, header) for n, cells in itertools.islice(rows, CHUNK_ROWS)]


# --- the import ---------------------------------------------------------------------------


class _Importer:
    def __init__(
        self,
        session: AsyncSession,
        *,
        principal: Principal,
        crypto: FieldCrypto,
        header: Header,
        dry_run: bool,
        default_org: OrgRef | None,
        report: SheetWriter | None,
    ) -> None:
        self.session = session
        self.principal = principal
        self.crypto = crypto
        self.header = header
        self.dry_run = dry_run
        self.default_org = default_org
        self.report = report
        self.given = frozenset(c.key for c in header.columns.values())
        self.labels = {c.key: str(header.cells[i]).strip() for i, c in header.columns.items()}
        self.orgs_by_code: dict[str, OrgRef | None] = {}
        self.orgs_by_id: dict[uuid.UUID, OrgRef] = {}
        if default_org is not None:
            self.orgs_by_id[default_org.id] = default_org
        # Rows that passed, by person: the ID number's hash, and (name, birth date, orgs).
        self.seen_digests: dict[bytes, int] = {}
        self.seen_names: dict[tuple[Any, ...], tuple[int, bool]] = {}  # row, had a number
        self.counts = dict.fromkeys(RowStatus, 0)
        self.rows: list[ImportRow] = []
        self.listing_all = True
        self.omitted = 0

    # -- one chunk --

    async def process(self, rows: list[_Row]) -> None:
        await self._resolve_codes(rows)
        for row in rows:
            if not row.errors:
                self._validate(row)
        candidates = [r for r in rows if r.card is not None]
        by_digest, by_name = await self._registered(candidates)
        creating: list[_Row] = []
        for row in candidates:
            self._decide(row, by_digest, by_name)
            if row.status is RowStatus.valid:
                creating.append(row)
        if creating and not self.dry_run:
            await self._insert(creating)
        for row in rows:
            self._record(row)

    async def _resolve_codes(self, rows: list[_Row]) -> None:
        wanted = {
            row.values[c] for row in rows for c in CODE_FIELDS if row.values.get(c) is not None
        } - self.orgs_by_code.keys()
        if wanted:
            refs = await fetch_org_refs(
                self.session, principal=self.principal, where=col(Org.code).in_(wanted)
            )
            for ref, code in refs:
                self.orgs_by_code[code] = ref
                self.orgs_by_id[ref.id] = ref
            for code in wanted:
                self.orgs_by_code.setdefault(code, None)

    def _validate(self, row: _Row) -> None:
        """The checks of `POST /members`, on one row."""
        values = row.values
        data: dict[str, Any] = {
            k: values[k]
            for k in (*TEXT_FIELDS, *ENUM_FIELDS, *DATE_FIELDS, "id_number", "phone", "skills")
            if values.get(k) is not None
        }
        if "resume" in values:
            data["resume"] = values["resume"]
        for column, card_field in CODE_FIELDS.items():
            code = values.get(column)
            if code is None:
                continue
            ref = self.orgs_by_code.get(code)
            if ref is None:
                row.fail(column, "no such organization in your scope")
            else:
                data[card_field] = ref.id
        if row.errors:
            return
        self._apply_default_org(data)
        self._fill_from_id_number(data)
        try:
            card_in = MemberCreate.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors():
                loc = str(err["loc"][0]) if err["loc"] else "row"
                message = "is required" if err["type"] == "missing" else str(err["msg"])
                row.fail(FIELD_COLUMNS.get(loc, loc), message)
            return
        raw = card_in.model_dump(exclude={"id_number", "phone", "resume"})
        card = {k: v.value if isinstance(v, StrEnum) else v for k, v in raw.items()}
        card["resume"] = resume_json(card_in.resume)
        card["relation"] = (
            card_in.relation or default_relation(card_in.category, org_id=card_in.org_id)
        ).value
        broken = card_errors(card, id_number=card_in.id_number, blame_id_number=True)
        if not broken:
            broken = check_references(self.orgs_by_id, card=card, changed=set(CODE_FIELDS.values()))
        for error in broken:
            row.fail(FIELD_COLUMNS.get(error.field, error.field), error.message)
        if row.errors:
            return
        row.card = card
        row.id_number = card_in.id_number
        row.phone = card_in.phone
        if card_in.id_number is not None:
            row.digest = self.crypto.lookup.digest(card_in.id_number, purpose=ID_NUMBER)

    def _apply_default_org(self, data: dict[str, Any]) -> None:
        """A row naming neither an org nor a residence community takes `org_id` of the
        request: as its org when enrolled, as its residence community when resident."""
        if self.default_org is None or "org_id" in data or "residence_org_id" in data:
            return
        relation = data.get("relation")
        if relation is None and data.get("category") is not None:
            implied = CATEGORY_RELATION.get(data["category"])
            relation = implied.value if implied is not None else None
        target = "residence_org_id" if relation == Relation.resident.value else "org_id"
        data[target] = self.default_org.id

    @staticmethod
    def _fill_from_id_number(data: dict[str, Any]) -> None:
        """Birth date and gender, when left blank, are those the ID number carries."""
        if "id_number" not in data or ("birth_date" in data and "gender" in data):
            return
        try:
            parsed = idnumber.parse(data["id_number"])
        except idnumber.InvalidIdNumber:
            return  # MemberCreate says why
        data.setdefault("birth_date", parsed.birth_date)
        data.setdefault("gender", parsed.gender)

    async def _registered(
        self, rows: list[_Row]
    ) -> tuple[dict[bytes, Member], dict[tuple[Any, ...], list[Member]]]:
        """The live records these rows may be: by ID number, and by name and birth date
        (the orgs are compared in `_name_matches`)."""
        digests = list({r.digest for r in rows if r.digest is not None})
        pairs = list({(r.card["name"], r.card["birth_date"]) for r in rows if r.card is not None})
        by_digest: dict[bytes, Member] = {}
        by_name: dict[tuple[Any, ...], list[Member]] = {}
        live = col(Member.merged_into).is_(None)
        # Joins against arrays rather than IN lists: the plan stays a hash join or index
        # probes even on a table without statistics yet (a first import) and under a generic
        # plan, where an IN list of 1,000 parameters is tested row by row.
        if digests:
            wanted = (
                func.unnest(cast_(digests, ARRAY(LargeBinary))).table_valued("h").render_derived()
            )
            found = await self.session.scalars(
                select(Member).join(wanted, col(Member.id_number_hash) == wanted.c.h).where(live)
            )
            by_digest = {m.id_number_hash: m for m in found if m.id_number_hash is not None}
        if pairs:
            names, births = zip(*pairs, strict=True)
            people = (
                func.unnest(cast_(list(names), ARRAY(Text)), cast_(list(births), ARRAY(Date)))
                .table_valued("name", "birth_date")
                .render_derived()
            )
            found = await self.session.scalars(
                select(Member)
                .join(
                    people,
                    (col(Member.name) == people.c.name)
                    & (col(Member.birth_date) == people.c.birth_date),
                )
                .where(live)
                .order_by(col(Member.id))
            )
            for m in found:
                key = (m.name, m.birth_date, m.org_id, m.residence_org_id)
                by_name.setdefault(key, []).append(m)
        return by_digest, by_name

    def _decide(
        self,
        row: _Row,
        by_digest: Mapping[bytes, Member],
        by_name: Mapping[tuple[Any, ...], list[Member]],
    ) -> None:
        if row.digest is not None:
            first = self.seen_digests.get(row.digest)
            if first is not None:
                row.fail("id_number", f"the same ID number as row {first} of this file")
                return
            existing = by_digest.get(row.digest)
            if existing is not None:
                self._compare(row, existing, key="id_number")
                return
            # The same person, registered (or listed above) before the number was known.
            first, had_number = self.seen_names.get(row.name_key, (None, True))
            if not had_number:
                row.fail("name", f"the same name, birth date and org as row {first}, without ID")
                return
            unnumbered = [m for m in self._name_matches(row, by_name) if m.id_number_hash is None]
            if unnumbered:
                row.member_id = unnumbered[0].id
                row.fail(
                    "name",
                    f"registered as member {unnumbered[0].id} without an ID number: add the "
                    f"number to that record with PATCH /members/{unnumbered[0].id}",
                )
                return
        else:
            first, _ = self.seen_names.get(row.name_key, (None, False))
            if first is not None:
                row.fail(
                    "name", f"the same name, birth date and org as row {first}; add the ID number"
                )
                return
            matches = self._name_matches(row, by_name)
            if len(matches) > 1:
                ids = ", ".join(str(m.id) for m in matches)
                row.fail("name", f"matches several registered members ({ids}); add the ID number")
                return
            if matches:
                self._compare(row, matches[0], key="name")
                return
            if row.id_masked is not None:
                row.fail("id_number", "is masked: give the full number to register a new member")
                return
        if row.phone_masked is not None:
            row.fail("phone", "is masked: give the full number to register a new member")
            return
        row.status = RowStatus.valid
        self._remember(row)

    def _name_matches(
        self, row: _Row, by_name: Mapping[tuple[Any, ...], list[Member]]
    ) -> list[Member]:
        assert row.card is not None
        card = row.card
        if card["org_id"] is not None:
            candidates = [
                m
                for key, ms in by_name.items()
                if key[:3] == (card["name"], card["birth_date"], card["org_id"])
                for m in ms
            ]
        else:
            candidates = by_name.get(row.name_key, [])
        if row.id_masked is not None:
            candidates = [m for m in candidates if m.id_number_masked == row.id_masked]
        return candidates

    def _compare(self, row: _Row, existing: Member, *, key: str) -> None:
        assert row.card is not None
        differ = [
            FIELD_COLUMNS.get(f, f)
            for f in COMPARED
            if FIELD_COLUMNS.get(f, f) in self.given and row.card[f] != getattr(existing, f)
        ]
        no_number = row.digest is None and row.id_masked is None
        if "id_number" in self.given and no_number and existing.id_number_hash is not None:
            differ.append("id_number")
        if "phone" in self.given and not self._same_phone(row, existing):
            differ.append("phone")
        row.member_id = existing.id
        if differ:
            row.fail(
                key,
                f"already registered as member {existing.id} with other data "
                f"({', '.join(differ)}): change that record with PATCH /members/{existing.id}",
            )
            return
        row.status = RowStatus.unchanged
        self._remember(row)

    def _same_phone(self, row: _Row, existing: Member) -> bool:
        if row.phone_masked is not None:
            return row.phone_masked == existing.phone_masked
        if existing.phone_cipher is None or row.phone is None:
            return existing.phone_cipher is None and row.phone is None
        return self.crypto.keys.decrypt(existing.phone_cipher, purpose=PHONE) == row.phone

    def _remember(self, row: _Row) -> None:
        if row.digest is not None:
            self.seen_digests[row.digest] = row.number
        self.seen_names.setdefault(row.name_key, (row.number, row.digest is not None))

    def _key(self, card: Mapping[str, Any]) -> uuid.UUID:
        org, residence = card["org_id"], card["residence_org_id"]
        return member_shard_key(
            self.orgs_by_id[org].shard_key if org is not None else None,
            self.orgs_by_id[residence].shard_key if residence is not None else None,
        )

    async def _insert(self, rows: list[_Row]) -> None:
        """Bulk insert; a row whose ID number another request registered meanwhile is
        skipped by the numbers' lookup table (claimed first) and reported."""
        values: list[dict[str, Any]] = []
        for row in rows:
            assert row.card is not None
            row.member_id = uuid.uuid4()
            values.append(
                {
                    "id": row.member_id,
                    "shard_key": self._key(row.card),
                    **row.card,
                    **id_number_columns(self.crypto, row.id_number),
                    **phone_columns(self.crypto, row.phone),
                }
            )
        claimed = await shard_keys.claim_identities(
            self.session,
            [
                (v["id_number_hash"], v["id"], v["shard_key"])
                for v in values
                if v["id_number_hash"] is not None
            ],
        )
        values = [
            v for v in values if v["id_number_hash"] is None or v["id_number_hash"] in claimed
        ]
        table = Member.__table__
        inserted: set[uuid.UUID] = set()
        if values:
            stmt = insert(table).returning(table.c.id)
            inserted = set((await self.session.execute(stmt, values)).scalars())
        registered: list[uuid.UUID] = []
        for row in rows:
            if row.member_id in inserted:
                row.status = RowStatus.created
                registered.append(row.member_id)
            else:
                row.status = None
                row.member_id = None
                row.fail("id_number", "was registered by another request meanwhile")
        await emit_members_registered(self.session, registered)

    # -- results --

    def _record(self, row: _Row) -> None:
        status = RowStatus.invalid if row.errors else row.status
        assert status is not None
        self.counts[status] += 1
        result = ImportRow(
            row=row.number, status=status, member_id=row.member_id, errors=row.errors
        )
        if self.listing_all and len(self.rows) >= ROWS_IN_FULL:
            self.listing_all = False
            self.rows = [r for r in self.rows if r.status is RowStatus.invalid]
        if self.listing_all or (status is RowStatus.invalid and len(self.rows) < ROWS_IN_FULL):
            self.rows.append(result)
        elif status is RowStatus.invalid:
            self.omitted += 1
        if status is RowStatus.invalid and self.report is not None:
            cells = list(row.cells) + [None] * (len(self.header.cells) - len(row.cells))
            reasons = "; ".join(
                f"{self.labels.get(e.field, e.field)}: {e.message}" for e in row.errors
            )
            self.report.append([*cells[: len(self.header.cells)], reasons])

    def result(self) -> ImportResult:
        c = self.counts
        total = sum(c.values())
        return ImportResult(
            dry_run=self.dry_run,
            total=total,
            valid=total - c[RowStatus.invalid],
            invalid=c[RowStatus.invalid],
            created=c[RowStatus.created],
            unchanged=c[RowStatus.unchanged],
            rows=self.rows,
            rows_omitted=self.omitted,
        )


async def _default_org(
    session: AsyncSession, *, principal: Principal, org_id: uuid.UUID | None
) -> OrgRef | None:
    if org_id is None:
        return None
    refs = await fetch_org_refs(session, principal=principal, where=col(Org.id) == org_id)
    if not refs or not refs[0][0].in_scope:
        raise InvalidReference(
            "The default organization is not valid.",
            errors=[FieldError(field="org_id", message="no such organization in your scope")],
        )
    return refs[0][0]


async def import_members(
    session: AsyncSession,
    *,
    file: IO[bytes],
    filename: str | None,
    principal: Principal,
    crypto: FieldCrypto,
    dry_run: bool,
    default_org_id: uuid.UUID | None = None,
    report: ReportFormat = ReportFormat.json,
) -> ImportOutcome:
    require_writer(principal)
    default_org = await _default_org(session, principal=principal, org_id=default_org_id)
    reader = await to_thread.run_sync(partial(SheetReader, file, filename=filename))
    try:
        if not dry_run:
            locked = await session.scalar(
                text("SELECT pg_try_advisory_xact_lock(hashtext(:lock))"), {"lock": LOCK}
            )
            if not locked:
                raise ImportInProgress(
                    "Another import of members is running; try again shortly.",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                )
        # The table may grow by 100,000 rows in this transaction, unseen by statistics: plan
        # each lookup for the rows as they are now, never reuse a plan made on an empty table.
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        writer = None
        if report is not ReportFormat.json:
            writer = SheetWriter(SheetFormat(report.value), [*reader.header.cells, ERRORS_HEADER])
        importer = _Importer(
            session,
            principal=principal,
            crypto=crypto,
            header=reader.header,
            dry_run=dry_run,
            default_org=default_org,
            report=writer,
        )
        rows = reader.rows()
        while chunk := await to_thread.run_sync(_read_chunk, rows, reader.header):
            await importer.process(chunk)
    finally:
        reader.close()
    result = importer.result()
    if not dry_run:
        await renew_statistics(session, result.created)
    await audit.record(
        session,
        audit_log,
        principal,
        action="member.import_dry_run" if dry_run else "member.import",
        resource="member",
        outcome="success" if result.invalid == 0 else "partial",
    )
    log.info(
        "member import (%s, %s): %d rows, %d created, %d unchanged, %d invalid",
        "dry run" if dry_run else "real run",
        reader.format.value,
        result.total,
        result.created,
        result.unchanged,
        result.invalid,
    )
    if writer is None:
        return ImportOutcome(result=result)
    return ImportOutcome(result=result, report=writer.finish(), report_format=writer.format)


def file_digest(file: IO[bytes]) -> str:
    """SHA-256 of an upload (for `Idempotency-Key` fingerprints); leaves it at the start."""
    file.seek(0)
    digest = hashlib.sha256()
    while chunk := file.read(1_048_576):
        digest.update(chunk)
    file.seek(0)
    return digest.hexdigest()
