from __future__ import annotations

import csv
import io
import os
import zipfile
from collections.abc import Callable
from datetime import date
from typing import Any

import httpx
import pytest
from openpyxl import Workbook, load_workbook
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.registry import idnumber
from services.registry.app import create_app
from services.registry.service import imports
from services.registry.service.member_card import renew_statistics
from services.registry.settings import RegistrySettings
from tests.helpers import client, mint
from tests.registry.factories import Tree, make_member, next_id_number

IMPORT = "/api/v1/registry/members/import"
EXPORT = "/api/v1/registry/members/export"
MEMBERS = "/api/v1/registry/members"
AUDIT = "/api/v1/registry/audit-log"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

Sessions = async_sessionmaker[AsyncSession]
AsRole = Callable[..., httpx.AsyncClient]
Rows = list[list[Any]]

HEADER = [
    "姓名",
    "性别",
    "出生日期",
    "身份证号",
    "电话",
    "学历",
    "党员类型",
    "类别",
    "所在组织代码",
    "特长",
]


def xlsx_file(rows: Rows) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def csv_file(rows: Rows, encoding: str = "utf-8") -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows([["" if v is None else str(v) for v in row] for row in rows])
    return out.getvalue().encode(encoding)


def as_file(rows: Rows, fmt: str) -> tuple[str, bytes, str]:
    if fmt == "xlsx":
        return ("roster.xlsx", xlsx_file(rows), XLSX)
    return ("roster.csv", csv_file(rows), "text/csv")


def read_sheet(content: bytes, fmt: str) -> Rows:
    if fmt == "xlsx":
        sheet = load_workbook(io.BytesIO(content), read_only=True).worksheets[0]
        return [list(r) for r in sheet.iter_rows(values_only=True)]
    return [list(r) for r in csv.reader(io.StringIO(content.decode("utf-8-sig")))]


async def upload(
    c: httpx.AsyncClient,
    file: tuple[str, bytes, str],
    *,
    expect: int = 200,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> httpx.Response:
    query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
    r = await c.post(IMPORT, files={"file": file}, params=query, headers=headers or {})
    assert r.status_code == expect, r.text
    return r


async def count(db: Sessions, sql: str, **params: Any) -> int:
    async with db() as s:
        return int((await s.execute(text(sql), params)).scalar_one())


async def members_count(db: Sessions) -> int:
    return await count(db, "SELECT count(*) FROM registry.members")


def card(
    tree: Tree, name: str, number: str | None = None, *, org: str | None = None, **over: Any
) -> list[Any]:
    values = {
        "姓名": name,
        "性别": "男",
        "出生日期": "1970-01-01",
        "身份证号": number,
        "电话": "13812341234",
        "学历": "高中",
        "党员类型": "正式",
        "类别": "离退休",
        "所在组织代码": org or tree.community_a["code"],
        "特长": "书法、水电维修",
        **over,
    }
    return [values[h] for h in HEADER]


def by_row(body: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {r["row"]: r for r in body["rows"]}


def error_fields(row: dict[str, Any]) -> set[str]:
    return {e["field"] for e in row["errors"]}


class TestImportMembers:
    @pytest.mark.parametrize("fmt", ["xlsx", "csv"])
    async def test_good_rows_go_in_and_bad_rows_come_back_with_reasons(
        self, admin: httpx.AsyncClient, tree: Tree, db: Sessions, fmt: str
    ) -> None:
        taken = next_id_number()
        existing = await make_member(
            admin, org_id=tree.community_a["id"], id_number=taken, phone="13900000000"
        )
        good_1, good_2, twice = next_id_number(), next_id_number(), next_id_number()
        bad_checksum = good_1[:17] + ("0" if good_1[17] != "0" else "1")
        rows = [
            HEADER,
            card(tree, "张一", good_1),  # 2
            card(tree, "张二", bad_checksum),  # 3
            card(tree, "张三", next_id_number(), org="NO-SUCH-CODE"),  # 4
            card(tree, "张四", next_id_number(), **{"出生日期": "1970-13-45"}),  # 5
            card(tree, "张五", next_id_number(), **{"学历": "幼儿园"}),  # 6
            card(tree, "张六", twice),  # 7
            card(tree, "张六", twice),  # 8: the same person again
            card(tree, "张七", taken),  # 9: registered, with another phone
            card(tree, "李八", good_2, **{"性别": "", "出生日期": ""}),  # 10: from the ID
        ]
        before = await members_count(db)
        r = await upload(admin, as_file(rows, fmt))
        body = r.json()
        assert (body["total"], body["valid"], body["invalid"]) == (9, 3, 6)
        assert (body["created"], body["unchanged"], body["dry_run"]) == (3, 0, False)
        rows_ = by_row(body)
        assert [rows_[n]["status"] for n in (2, 7, 10)] == ["created"] * 3
        assert error_fields(rows_[3]) == {"id_number"}
        assert "check digit" in rows_[3]["errors"][0]["message"]
        assert error_fields(rows_[4]) == {"org_code"}
        assert error_fields(rows_[5]) == {"birth_date"}
        assert error_fields(rows_[6]) == {"education"}
        assert error_fields(rows_[8]) == {"id_number"}
        assert "row 7" in rows_[8]["errors"][0]["message"]
        assert rows_[9]["member_id"] == existing["id"]
        assert existing["id"] in rows_[9]["errors"][0]["message"]
        assert "phone" in rows_[9]["errors"][0]["message"]
        assert await members_count(db) == before + 3
        created = (await admin.get(f"{MEMBERS}/{rows_[2]['member_id']}")).json()
        assert created["name"] == "张一" and created["education"] == "senior_high"
        assert created["id_number_masked"] == idnumber.mask(good_1)
        assert created["phone"] == "13812341234" and created["skills"] == ["书法", "水电维修"]
        derived = (await admin.get(f"{MEMBERS}/{rows_[10]['member_id']}")).json()
        assert derived["birth_date"] == "1970-01-01" and derived["gender"] == "male"
        untouched = (await admin.get(f"{MEMBERS}/{existing['id']}")).json()
        assert untouched["phone"] == "13900000000"

    async def test_dry_run_checks_and_writes_nothing(
        self, admin: httpx.AsyncClient, tree: Tree, db: Sessions
    ) -> None:
        rows = [HEADER, card(tree, "王一", next_id_number()), card(tree, "王二", "123")]
        before = await members_count(db)
        events = await count(db, "SELECT count(*) FROM registry.outbox")
        body = (await upload(admin, as_file(rows, "csv"), dry_run=True)).json()
        assert body["dry_run"] is True
        assert [r["status"] for r in body["rows"]] == ["valid", "invalid"]
        assert (body["valid"], body["invalid"], body["created"]) == (1, 1, 0)
        assert await members_count(db) == before
        assert await count(db, "SELECT count(*) FROM registry.outbox") == events

    @pytest.mark.parametrize("fmt", ["xlsx", "csv"])
    async def test_importing_the_same_file_again_changes_nothing(
        self, admin: httpx.AsyncClient, tree: Tree, db: Sessions, fmt: str
    ) -> None:
        rows = [
            HEADER,
            card(tree, "赵一", next_id_number()),
            card(tree, "赵二", None),  # no ID number: matched by name, birth date, org
            card(tree, "赵三", next_id_number(), **{"电话": "", "特长": ""}),
        ]
        first = (await upload(admin, as_file(rows, fmt))).json()
        assert first["created"] == 3
        versions = await count(db, "SELECT sum(version) FROM registry.members")
        again = (await upload(admin, as_file(rows, fmt))).json()
        assert (again["created"], again["unchanged"], again["invalid"]) == (0, 3, 0)
        assert [r["member_id"] for r in again["rows"]] == [r["member_id"] for r in first["rows"]]
        assert await count(db, "SELECT sum(version) FROM registry.members") == versions

    async def test_a_row_without_id_number_never_doubles_a_person(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        rows = [HEADER, card(tree, "钱一", None), card(tree, "钱一", None)]
        body = (await upload(admin, as_file(rows, "csv"))).json()
        assert [r["status"] for r in body["rows"]] == ["created", "invalid"]
        changed = [HEADER, card(tree, "钱一", None, **{"电话": "13700000000"})]
        body = (await upload(admin, as_file(changed, "csv"))).json()
        assert body["rows"][0]["status"] == "invalid"
        assert "phone" in body["rows"][0]["errors"][0]["message"]

    async def test_a_person_first_registered_without_id_number_is_not_registered_again(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        first = (await upload(admin, as_file([HEADER, card(tree, "孔一", None)], "csv"))).json()
        number = next_id_number()
        body = (await upload(admin, as_file([HEADER, card(tree, "孔一", number)], "csv"))).json()
        row = body["rows"][0]
        assert row["status"] == "invalid" and row["member_id"] == first["rows"][0]["member_id"]
        assert "PATCH" in row["errors"][0]["message"]
        in_one_file = [HEADER, card(tree, "孔二", None), card(tree, "孔二", next_id_number())]
        body = (await upload(admin, as_file(in_one_file, "csv"), dry_run=True)).json()
        assert [r["status"] for r in body["rows"]] == ["valid", "invalid"]

    async def test_a_second_import_while_one_runs_is_409(
        self, admin: httpx.AsyncClient, tree: Tree, engine: AsyncEngine
    ) -> None:
        rows = [HEADER, card(tree, "曹一", next_id_number())]
        lock = text("SELECT pg_advisory_lock(hashtext('registry.member_import'))")
        async with engine.connect() as other:
            await other.execute(lock)
            try:
                r = await upload(admin, as_file(rows, "csv"), expect=409)
                assert r.headers["retry-after"] == "5"
                await upload(admin, as_file(rows, "csv"), dry_run=True)  # checks still run
            finally:
                unlock = "SELECT pg_advisory_unlock(hashtext('registry.member_import'))"
                await other.execute(text(unlock))

    async def test_gb18030_csv_is_read(self, admin: httpx.AsyncClient, tree: Tree) -> None:
        rows = [HEADER, card(tree, "孙悟空", next_id_number())]
        file = ("roster.csv", csv_file(rows, "gb18030"), "text/csv")
        body = (await upload(admin, file, dry_run=True)).json()
        assert body["valid"] == 1, body

    async def test_utf8_csv_with_bom_and_english_headers(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        rows = [
            ["name", "Gender", "birth_date", "category", "org_code", "membership"],
            ["Li Lei", "male", "1980-02-03", "retired", tree.community_a["code"], "probationary"],
        ]
        file = ("roster.csv", "\ufeff".encode() + csv_file(rows), "text/csv")
        body = (await upload(admin, file)).json()
        assert body["created"] == 1, body
        member = (await admin.get(f"{MEMBERS}/{body['rows'][0]['member_id']}")).json()
        assert member["membership"] == "probationary" and member["relation"] == "enrolled"

    async def test_resident_rows_take_the_default_org_as_residence(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        rows = [
            ["姓名", "性别", "出生日期", "类别"],
            ["周一", "女", "1985-05-05", "在职党员"],
            ["周二", "男", "1950-05-05", "离退休"],
        ]
        body = (await upload(admin, as_file(rows, "xlsx"), org_id=tree.community_b["id"])).json()
        assert body["created"] == 2, body
        first, second = [
            (await admin.get(f"{MEMBERS}/{r['member_id']}")).json() for r in body["rows"]
        ]
        assert first["residence_org_id"] == tree.community_b["id"] and first["org_id"] is None
        assert second["org_id"] == tree.community_b["id"]

    async def test_the_rejected_rows_come_back_as_a_file_to_fix_and_import_again(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        number = next_id_number()
        rows = [
            HEADER,
            card(tree, "吴一", next_id_number()),
            card(tree, "吴二", number, **{"出生日期": "not a date"}),
        ]
        r = await upload(admin, as_file(rows, "xlsx"), report="xlsx")
        assert r.headers["content-type"] == XLSX
        assert r.headers["content-disposition"].startswith("attachment;")
        assert (r.headers["x-import-created"], r.headers["x-import-invalid"]) == ("1", "1")
        rejected = read_sheet(r.content, "xlsx")
        assert rejected[0] == [*HEADER, "错误/errors"]
        assert len(rejected) == 2 and rejected[1][0] == "吴二"
        assert rejected[1][-1].startswith("出生日期:")
        rejected[1][2] = "1970-01-01"
        body = (await upload(admin, as_file(rejected, "xlsx"))).json()
        assert (body["created"], body["invalid"]) == (1, 0), body

    async def test_csv_report_of_a_dry_run(self, admin: httpx.AsyncClient, tree: Tree) -> None:
        rows = [HEADER, card(tree, "郑一", next_id_number(), **{"类别": "外星人"})]
        r = await upload(admin, as_file(rows, "csv"), dry_run=True, report="csv")
        assert r.headers["content-type"].startswith("text/csv")
        rejected = read_sheet(r.content, "csv")
        assert rejected[1][-1].startswith("类别: must be one of")

    @pytest.mark.parametrize(
        "name,content",
        [
            ("roster.xlsx", os.urandom(4096)),
            ("roster.csv", b"\xff\xfe\x00\x81\xfe\xff" * 500),
            ("roster.xlsx", b""),
            ("roster.pdf", b"%PDF-1.4 not a roster"),
            ("roster.xlsx", b"PK\x03\x04" + os.urandom(2000)),
            ("roster.csv", b"PK\x03\x04 a zip named csv"),
            ("roster.xlsx", "zip-without-workbook"),
            ("roster.xlsx", "no-header"),
            ("roster.csv", "unknown-column"),
            ("roster.csv", "no-name-column"),
        ],
    )
    async def test_an_unreadable_file_is_422_and_writes_nothing(
        self, admin: httpx.AsyncClient, tree: Tree, db: Sessions, name: str, content: Any
    ) -> None:
        if content == "zip-without-workbook":
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w") as z:
                z.writestr("hello.txt", "not a workbook")
            content = out.getvalue()
        elif content == "no-header":
            content = xlsx_file([card(tree, "无表头", next_id_number()) for _ in range(3)])
        elif content == "unknown-column":
            content = csv_file([[*HEADER, "血型"], [*card(tree, "甲", None), "O"]])
        elif content == "no-name-column":
            content = csv_file([HEADER[1:], card(tree, "乙", None)[1:]])
        before = await members_count(db)
        r = await upload(admin, (name, content, "application/octet-stream"), expect=422)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 422 and r.json()["errors"]
        assert await members_count(db) == before

    async def test_damage_after_good_rows_writes_nothing(
        self, admin: httpx.AsyncClient, tree: Tree, db: Sessions
    ) -> None:
        # More good rows than one chunk: some are inserted before the damage is found.
        good = csv_file([HEADER, *(card(tree, f"好{i}", None) for i in range(1500))])
        damaged = good + b'"unterminated' + b"x" * 140_000
        before = await members_count(db)
        await upload(admin, ("roster.csv", damaged, "text/csv"), expect=422)
        assert await members_count(db) == before

    async def test_a_file_over_the_upload_limit_is_413(
        self, db: Sessions, registry_settings: RegistrySettings, tree: Tree
    ) -> None:
        small = registry_settings.model_copy(update={"max_upload_bytes": 10_000})
        app = create_app(small, sessionmaker=db)
        async with client(app, mint("admin")) as c:
            rows = [HEADER, *(card(tree, f"大{i}", None) for i in range(300))]
            r = await upload(c, ("roster.csv", csv_file(rows), "text/csv"), expect=413)
        assert r.headers["content-type"] == "application/problem+json"

    @pytest.mark.parametrize("role", ["org_viewer", "member", "auditor"])
    async def test_only_writers_import(self, tree: Tree, as_role: AsRole, role: str) -> None:
        rows = [HEADER, card(tree, "冯一", next_id_number())]
        async with as_role(role, org_id=tree.community_a["id"]) as c:
            r = await upload(c, as_file(rows, "csv"), expect=403)
        assert r.headers["content-type"] == "application/problem+json"

    async def test_org_admin_imports_into_own_scope_only(self, tree: Tree, as_role: AsRole) -> None:
        rows = [
            HEADER,
            card(tree, "陈一", next_id_number()),
            card(tree, "陈二", next_id_number(), org=tree.community_b["code"]),
        ]
        async with as_role("org_admin", org_id=tree.community_a["id"]) as c:
            body = (await upload(c, as_file(rows, "csv"))).json()
            assert [r["status"] for r in body["rows"]] == ["created", "invalid"]
            assert body["rows"][1]["errors"] == [
                {"field": "org_code", "message": "no such organization in your scope"}
            ]
            await upload(c, as_file(rows, "csv"), org_id=tree.community_b["id"], expect=422)

    async def test_card_rules_apply_to_every_row(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        rows = [
            HEADER,
            card(tree, "褚一", None, **{"出生日期": "2090-01-01"}),
            card(tree, "褚二", None, **{"类别": "在职党员"}),  # resident, yet no community
            card(tree, "褚三", None, **{"电话": "12345"}),
            card(tree, "褚四", next_id_number(date(1971, 1, 1))),  # born 1970-01-01 says the card
        ]
        body = (await upload(admin, as_file(rows, "csv"), dry_run=True)).json()
        assert [error_fields(r) for r in body["rows"]] == [
            {"birth_date"},
            {"residence_org_code"},
            {"phone"},
            {"id_number"},
        ]

    async def test_idempotency_key_replays_the_first_answer(
        self, admin: httpx.AsyncClient, tree: Tree, db: Sessions
    ) -> None:
        rows = [HEADER, card(tree, "卫一", next_id_number())]
        file = as_file(rows, "csv")
        key = {"Idempotency-Key": "import-1"}
        first = (await upload(admin, file, headers=key)).json()
        second = (await upload(admin, file, headers=key)).json()
        assert second == first and first["created"] == 1
        other = as_file([HEADER, card(tree, "卫二", next_id_number())], "csv")
        await upload(admin, other, headers=key, expect=422)

    async def test_one_audit_entry_and_one_event_per_member(
        self, admin: httpx.AsyncClient, tree: Tree, db: Sessions, as_role: AsRole
    ) -> None:
        rows = [HEADER, *(card(tree, f"蒋{i}", next_id_number()) for i in range(3))]
        body = (await upload(admin, as_file(rows, "xlsx"))).json()
        ids = [r["member_id"] for r in body["rows"]]
        async with as_role("auditor") as auditor:
            trail = await auditor.get(AUDIT, params={"action": "member.import"})
        entries = trail.json()["items"]
        assert len(entries) == 1 and entries[0]["record_id"] is None
        events = await count(
            db,
            "SELECT count(*) FROM registry.outbox WHERE type = 'member.registered' "
            "AND aggregate_id = ANY(CAST(:ids AS uuid[]))",
            ids=ids,
        )
        assert events == 3
        async with db() as s:
            payload = (
                await s.execute(
                    text("SELECT payload, org_paths FROM registry.outbox WHERE aggregate_id = :id"),
                    {"id": ids[0]},
                )
            ).one()
        assert payload.payload["org_id"] == tree.community_a["id"]
        assert payload.payload["org_path"] in payload.org_paths
        assert "phone" not in payload.payload and "id_number" not in payload.payload

    async def test_a_real_import_renews_the_statistics_a_dry_run_does_not(
        self, admin: httpx.AsyncClient, tree: Tree, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        changed: list[int] = []

        async def renew(session: AsyncSession, count: int) -> bool:
            changed.append(count)
            return False

        monkeypatch.setattr(imports, "renew_statistics", renew)
        rows = [HEADER, card(tree, "统一", next_id_number()), card(tree, "统二", next_id_number())]
        await upload(admin, as_file(rows, "csv"), dry_run=True)
        assert changed == []
        body = (await upload(admin, as_file(rows, "csv"))).json()
        assert body["created"] == 2 and changed == [2]

    async def test_statistics_are_renewed_after_a_write_of_a_tenth_of_the_table(
        self, admin: httpx.AsyncClient, tree: Tree, db: Sessions
    ) -> None:
        """The planner knew the members table as it was (after a TRUNCATE or on a new
        database: empty) until autovacuum's next look; a big import renews it at once."""
        for _ in range(3):
            await make_member(admin, org_id=tree.community_a["id"])
        known = "SELECT reltuples FROM pg_class WHERE oid = 'registry.members'::regclass"
        async with db() as s:  # as the planner knows a table nothing analysed since it was emptied
            await s.execute(
                text("UPDATE pg_class SET reltuples = 0 WHERE oid = 'registry.members'::regclass")
            )
            await s.commit()
        async with db() as s:
            assert await renew_statistics(s, 999) is False  # under 1,000 rows: never
            assert await s.scalar(text(known)) == 0
            assert await renew_statistics(s, 1000) is True
            # Analysed whole (the table is under the sample's size): the planner's count is
            # the table's.
            assert await s.scalar(text(known)) == await members_count(db) > 0
            await s.commit()

    async def test_a_write_under_a_tenth_of_the_table_is_left_to_autovacuum(
        self, db: Sessions
    ) -> None:
        async with db() as s:
            # As if the planner knew a million members (undone with the transaction).
            await s.execute(
                text("UPDATE pg_class SET reltuples = 1e6 WHERE oid = 'registry.members'::regclass")
            )
            assert await renew_statistics(s, 99_999) is False
            await s.rollback()

    async def test_big_files_list_the_invalid_rows_only(
        self, admin: httpx.AsyncClient, tree: Tree
    ) -> None:
        rows = [
            HEADER,
            *(
                card(tree, f"韩{i}", None, **{"出生日期": f"19{50 + i % 40}-0{1 + i % 9}-1{i % 9}"})
                for i in range(1100)
            ),
        ]
        rows.append(card(tree, "坏", None, **{"学历": "?"}))
        body = (await upload(admin, as_file(rows, "csv"), dry_run=True)).json()
        assert body["total"] == 1101 and body["invalid"] == 1
        assert [r["row"] for r in body["rows"]] == [1102]
        assert body["rows_omitted"] == 0


class TestExportMembers:
    async def test_export_holds_the_callers_scope_only(
        self, admin: httpx.AsyncClient, tree: Tree, as_role: AsRole
    ) -> None:
        mine = await make_member(admin, org_id=tree.community_a["id"], name="社区甲党员")
        await make_member(admin, org_id=tree.community_b["id"], name="社区乙党员")
        async with as_role("org_admin", org_id=tree.community_a["id"]) as c:
            r = await c.get(EXPORT, params={"format": "csv"})
        assert r.status_code == 200, r.text
        assert r.headers["content-disposition"].startswith("attachment;")
        names = [row[0] for row in read_sheet(r.content, "csv")[1:]]
        assert names == [mine["name"]]

    async def test_id_numbers_masked_and_phones_as_the_caller_may_see_them(
        self, admin: httpx.AsyncClient, tree: Tree, as_role: AsRole
    ) -> None:
        number = next_id_number()
        await make_member(
            admin, org_id=tree.community_a["id"], id_number=number, phone="13812345678"
        )
        r = await admin.get(EXPORT, params={"format": "xlsx"})
        header, row = read_sheet(r.content, "xlsx")
        cells = dict(zip(header, row, strict=True))
        assert cells["身份证号"] == idnumber.mask(number) and cells["电话"] == "13812345678"
        assert number not in r.content.decode("latin-1")
        async with as_role("org_viewer", org_id=tree.community_a["id"]) as c:
            r = await c.get(EXPORT, params={"format": "csv", "lang": "en"})
        header, row = read_sheet(r.content, "csv")
        cells = dict(zip(header, row, strict=True))
        assert cells["phone"] == "138****5678" and cells["category"] == "retired"

    async def test_formula_like_text_stays_text(self, admin: httpx.AsyncClient, tree: Tree) -> None:
        evil = '=HYPERLINK("http://evil.example/","click")'
        await make_member(admin, org_id=tree.community_a["id"], name=evil, address="@SUM(A1)")
        csv_rows = read_sheet((await admin.get(EXPORT, params={"format": "csv"})).content, "csv")
        assert csv_rows[1][0] == "'" + evil
        assert "'@SUM(A1)" in csv_rows[1]
        r = await admin.get(EXPORT, params={"format": "xlsx"})
        sheet = load_workbook(io.BytesIO(r.content)).worksheets[0]
        assert sheet["A2"].value == evil and sheet["A2"].data_type == "s"

    @pytest.mark.parametrize("fmt", ["xlsx", "csv"])
    async def test_an_export_imports_again_as_unchanged(
        self, admin: httpx.AsyncClient, tree: Tree, db: Sessions, as_role: AsRole, fmt: str
    ) -> None:
        await make_member(
            admin,
            org_id=tree.community_a["id"],
            group_id=tree.building_a1["id"],
            id_number=next_id_number(date(1960, 6, 1)),
            birth_date="1960-06-01",
            phone="0573-82345678",
            education="college",
            joined_on="1990-07-01",
            skills=["书法", "理发"],
            resume=[{"from": "1980-01-01", "to": None, "text": "毛纺厂"}],
            address="=1+1",
        )
        await make_member(
            admin, residence_org_id=tree.community_b["id"], category="in_service_resident"
        )
        await make_member(admin, org_id=tree.community_a["id"], name="-减号开头")
        exported = await admin.get(EXPORT, params={"format": fmt})
        before = await members_count(db)
        file = (f"members.{fmt}", exported.content, exported.headers["content-type"])
        body = (await upload(admin, file)).json()
        assert (body["total"], body["unchanged"], body["invalid"]) == (3, 3, 0), body
        assert await members_count(db) == before
        async with as_role("org_viewer", org_id=tree.city["id"]) as c:
            masked = await c.get(EXPORT, params={"format": fmt})
        file = (f"members.{fmt}", masked.content, masked.headers["content-type"])
        body = (await upload(admin, file)).json()
        assert body["unchanged"] == 3, body

    async def test_list_filters_apply(self, admin: httpx.AsyncClient, tree: Tree) -> None:
        await make_member(admin, org_id=tree.community_a["id"], name="退休者")
        await make_member(admin, org_id=tree.community_b["id"], name="下岗者", category="laid_off")
        r = await admin.get(EXPORT, params={"format": "csv", "category": "laid_off"})
        assert [row[0] for row in read_sheet(r.content, "csv")[1:]] == ["下岗者"]
        r = await admin.get(EXPORT, params={"format": "csv", "org_id": tree.community_a["id"]})
        assert [row[0] for row in read_sheet(r.content, "csv")[1:]] == ["退休者"]

    async def test_bad_filters_and_auditors_get_problems(
        self, admin: httpx.AsyncClient, as_role: AsRole
    ) -> None:
        r = await admin.get(EXPORT, params={"age_min": 60, "age_max": 30})
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
        r = await admin.get(EXPORT, params={"format": "pdf"})
        assert r.status_code == 422
        async with as_role("auditor") as c:
            assert (await c.get(EXPORT)).status_code == 403

    async def test_every_export_is_audited(
        self, admin: httpx.AsyncClient, tree: Tree, as_role: AsRole
    ) -> None:
        await admin.get(EXPORT, params={"format": "csv"})
        async with as_role("auditor") as auditor:
            trail = await auditor.get(AUDIT, params={"action": "member.export"})
        entries = trail.json()["items"]
        assert len(entries) == 1
