"""The registration card as a spreadsheet (xlsx or csv), shared by import and export: the
columns with their English and Chinese headers, the Chinese labels of the enums, reading an
uploaded file row by row (openpyxl read-only, csv streaming; UTF-8 with or without BOM, else
GB18030) and writing rows (guarded against formula injection)."""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from enum import StrEnum
from typing import IO, Any

from openpyxl import Workbook, load_workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.utils.datetime import from_excel

from common.errors import FieldError
from services.registry.errors import ImportTooLarge, UnreadableImportFile
from services.registry.models import Category, Education, Gender, Membership, MemberStatus, Relation

MAX_ROWS = 100_000  # data rows in one file
MAX_COLUMNS = 64
HEADER_SEARCH_ROWS = 10  # a title row or two may sit above the header
# An xlsx is a zip: refuse one whose parts expand beyond this (a "zip bomb").
MAX_XLSX_EXPANDED = 1024 * 1_048_576
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
ERRORS_HEADER = "错误/errors"


class SheetFormat(StrEnum):
    xlsx = "xlsx"
    csv = "csv"


class Lang(StrEnum):
    zh = "zh"
    en = "en"


@dataclass(frozen=True)
class Column:
    key: str  # the English header, and the card field it fills
    zh: str
    aliases: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)  # enum value -> Chinese label
    more_labels: Mapping[str, str] = field(default_factory=dict)  # other words → enum value
    read_only: bool = False  # exported, ignored on import


def _labels(enum: type[StrEnum], zh: Sequence[str]) -> dict[str, str]:
    return dict(zip((e.value for e in enum), zh, strict=True))


CATEGORY_LABELS = _labels(
    Category,
    (
        "社区组织工作人员",
        "新经济组织从业人员",
        "离退休",
        "下岗失业",
        "外来务工",
        "农转城",
        "在职党员",
        "单位退休",
        "其他",
    ),
)

COLUMNS: tuple[Column, ...] = (
    Column("name", "姓名"),
    Column("gender", "性别", labels=_labels(Gender, ("男", "女"))),
    Column("birth_date", "出生日期", aliases=("出生年月日", "生日")),
    Column("id_number", "身份证号", aliases=("身份证号码", "公民身份号码", "身份证")),
    Column("ethnicity", "民族"),
    Column("phone", "电话", aliases=("联系电话", "手机", "手机号", "手机号码")),
    Column(
        "education",
        "学历",
        labels=_labels(Education, ("初中及以下", "高中", "大专", "本科", "研究生")),
        more_labels={
            "初中": "junior_high_or_below",
            "小学": "junior_high_or_below",
            "中专": "senior_high",
            "职高": "senior_high",
            "技校": "senior_high",
            "高中/中专": "senior_high",
            "大学本科": "bachelor",
            "硕士": "postgraduate",
            "博士": "postgraduate",
        },
    ),
    Column("joined_on", "入党日期", aliases=("入党时间",)),
    Column(
        "membership",
        "党员类型",
        labels=_labels(Membership, ("正式", "预备")),
        more_labels={"正式党员": "full", "预备党员": "probationary"},
    ),
    Column("category", "类别", aliases=("党员分类",), labels=CATEGORY_LABELS),
    Column(
        "relation",
        "关系",
        aliases=("组织关系",),
        labels=_labels(Relation, ("在册", "居住")),
        more_labels={"在职": "resident", "非在册": "resident", "关系在外": "resident"},
    ),
    Column("org_code", "所在组织代码", aliases=("组织代码",)),
    Column("residence_org_code", "居住社区代码", aliases=("社区代码",)),
    Column("group_code", "楼道党小组代码", aliases=("党小组代码",)),
    Column("address", "住址", aliases=("地址", "居住地址", "家庭住址")),
    Column("employer", "工作单位", aliases=("单位",)),
    Column("skills", "特长", aliases=("专长",)),
    Column("resume", "履历", aliases=("简历",)),
    Column(
        "status",
        "状态",
        labels=_labels(MemberStatus, ("正常", "流动", "失联", "已转出", "去世", "除名")),
        read_only=True,
    ),
)
BY_KEY = {c.key: c for c in COLUMNS}
# Headers that are fine to find and carry nothing (a row counter, our own error column).
IGNORED_HEADERS = frozenset({"序号", "no", "no.", "#", "错误", "errors", "错误/errors"})


def normalise_header(raw: Any) -> str:
    """`" 性别（男/女）* "` → `性别`; `"Birth Date"` → `birth_date`."""
    text = unicodedata.normalize("NFKC", str(raw)).strip().lower()
    text = re.sub(r"\(.*?\)", "", text).replace("*", "")
    return re.sub(r"[\s\-]+", "_", text).strip("_")


_HEADERS: dict[str, Column] = {}
for _c in COLUMNS:
    for _h in (_c.key, _c.zh, *_c.aliases):
        _HEADERS[normalise_header(_h)] = _c


def column_for(header: Any) -> Column | None:
    return _HEADERS.get(normalise_header(header))


def enum_value(column: Column, text: str) -> str | None:
    """The enum value a cell names (the value itself or a Chinese word), else None."""
    word = unicodedata.normalize("NFKC", text).strip()
    if word in column.labels:
        return word
    lowered = word.lower()
    if lowered in column.labels:
        return lowered
    for value, label in column.labels.items():
        if word == label:
            return value
    return column.more_labels.get(word)


def enum_choices(column: Column) -> str:
    return ", ".join(f"{label} ({value})" for value, label in column.labels.items())


def header_of(column: Column, lang: Lang) -> str:
    return column.zh if lang is Lang.zh else column.key


def label_of(column: Column, value: str | None, lang: Lang) -> str | None:
    if value is None or lang is Lang.en or not column.labels:
        return value
    return column.labels.get(value, value)


# --- cell values ----------------------------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d", "%Y年%m月%d日")


def cell_text(value: Any) -> str | None:
    """A cell as trimmed text (None when blank); a number keeps its integer digits, and the
    `'` that guards a formula-like text (see `guard`) is taken off again."""
    if value is None:
        return None
    if isinstance(value, bool):
        text = "TRUE" if value else "FALSE"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, datetime):
        text = value.date().isoformat() if value.time() == time() else value.isoformat()
    elif isinstance(value, date):
        text = value.isoformat()
    else:
        text = str(value)
    text = text.strip()
    if len(text) > 1 and text[0] == "'" and text[1] in _FORMULA_START:
        text = text[1:]
    return text or None


def cell_date(value: Any) -> date:
    """A date cell, a serial day number, or text as 1970-01-01, 1970/1/1, 1970.1.1,
    19700101 or 1970年1月1日; ValueError otherwise."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if 1 <= value < 2_958_466:
            converted = from_excel(value)
            if isinstance(converted, datetime):
                return converted.date()
        raise ValueError(value)
    text = (cell_text(value) or "").split(" ")[0].split("T")[0]
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError(value)


def guard(value: Any) -> Any:
    """Text a spreadsheet could run as a formula (starting with = + - @, tab or CR) gets a
    leading `'`, for csv; import takes it off again (see `cell_text`)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


# --- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    row: int  # 1-based file row of the header
    cells: list[Any]  # as in the file (for the error report)
    columns: dict[int, Column]  # position -> the card column it fills


class SheetReader:
    """Rows of an uploaded xlsx or csv file: `header` first, then `rows()` yields
    `(file row number, cells)` for each non-blank data row. Every way a file can be broken
    surfaces as `UnreadableImportFile` (422) or `ImportTooLarge` (413)."""

    def __init__(self, file: IO[bytes], *, filename: str | None) -> None:
        self.file = file
        self.format = _detect_format(file, filename)
        self._workbook: Any = None
        self._text: io.TextIOWrapper | None = None
        try:
            self._rows = self._open()
            self.header = self._find_header()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._workbook is not None:
            self._workbook.close()
        if self._text is not None:
            self._text.detach()  # leave the upload open: its owner closes it

    def _open(self) -> Iterator[tuple[int, list[Any]]]:
        if self.format is SheetFormat.xlsx:
            return self._xlsx_rows()
        return self._csv_rows()

    def _xlsx_rows(self) -> Iterator[tuple[int, list[Any]]]:
        try:
            with zipfile.ZipFile(self.file) as archive:
                expanded = sum(i.file_size for i in archive.infolist())
            self.file.seek(0)
            if expanded > MAX_XLSX_EXPANDED:
                raise ImportTooLarge("The workbook expands to more than the import allows.")
            workbook = load_workbook(self.file, read_only=True, data_only=True)
            self._workbook = workbook
            sheet = workbook.worksheets[0]
            sheet.reset_dimensions()
            rows = sheet.iter_rows(values_only=True)
        except ImportTooLarge:
            raise
        except Exception as exc:  # openpyxl and zipfile raise many kinds on a broken file
            raise _unreadable("The file is not a readable xlsx workbook.") from exc
        return _guarded(self._numbered(rows), "The xlsx workbook is damaged")

    def _csv_rows(self) -> Iterator[tuple[int, list[Any]]]:
        encoding = _csv_encoding(self.file)
        text = io.TextIOWrapper(self.file, encoding=encoding, newline="")
        self._text = text
        first = text.readline(1_048_576)
        text.seek(0)
        delimiter = "\t" if "\t" in first and "," not in first else ","
        reader = csv.reader(text, delimiter=delimiter)
        return _guarded(self._numbered(reader), "The csv file cannot be parsed")

    @staticmethod
    def _numbered(rows: Iterable[Sequence[Any]]) -> Iterator[tuple[int, list[Any]]]:
        for number, row in enumerate(rows, start=1):
            yield number, list(row[:MAX_COLUMNS])

    def _find_header(self) -> Header:
        for number, cells in self._rows:
            columns: dict[int, Column] = {}
            unknown: list[FieldError] = []
            seen: dict[str, int] = {}
            duplicate: list[FieldError] = []
            for i, cell in enumerate(cells):
                if cell_text(cell) is None:
                    continue
                column = column_for(cell)
                if column is not None:
                    if column.key in seen:
                        duplicate.append(
                            FieldError(
                                field="header",
                                message=f"column {i + 1} repeats column {seen[column.key] + 1}",
                            )
                        )
                    seen[column.key] = i
                    columns[i] = column
                elif normalise_header(cell) not in IGNORED_HEADERS:
                    unknown.append(
                        FieldError(field="header", message=f"column {i + 1} is not a card column")
                    )
            if len(columns) < 2:
                if number >= HEADER_SEARCH_ROWS:
                    break
                continue
            errors = unknown + duplicate
            missing = [k for k in ("name", "category") if k not in seen]
            if "birth_date" not in seen and "id_number" not in seen:
                missing.append("birth_date")
            errors += [
                FieldError(field="header", message=f"the {BY_KEY[k].zh}/{k} column is missing")
                for k in missing
            ]
            if errors:
                raise _unreadable("The header row does not match the registration card.", errors)
            return Header(row=number, cells=cells, columns=columns)
        raise _unreadable(
            "No header row found: the first rows must name the card's columns "
            "(姓名/name, 类别/category, …)."
        )

    def rows(self) -> Iterator[tuple[int, list[Any]]]:
        count = 0
        for number, cells in self._rows:
            if all(cell_text(c) is None for c in cells):
                continue
            count += 1
            if count > MAX_ROWS:
                raise ImportTooLarge(f"The file has more than {MAX_ROWS} rows.")
            yield number, cells


def _unreadable(detail: str, errors: list[FieldError] | None = None) -> UnreadableImportFile:
    return UnreadableImportFile(detail, errors=errors or [FieldError(field="file", message=detail)])


def _guarded(rows: Iterator[tuple[int, list[Any]]], what: str) -> Iterator[tuple[int, list[Any]]]:
    """Damage found part-way through the file becomes a 422 (the import then writes nothing)."""
    number = 0
    try:
        for number, cells in rows:
            yield number, cells
    except (ImportTooLarge, UnreadableImportFile):
        raise
    except Exception as exc:  # the parsers' many error kinds, all a broken file
        raise _unreadable(f"{what} after row {number}.") from exc


def _detect_format(file: IO[bytes], filename: str | None) -> SheetFormat:
    head = file.read(8)
    file.seek(0)
    if not head:
        raise _unreadable("The file is empty.")
    suffix = (filename or "").rsplit(".", 1)[-1].lower() if "." in (filename or "") else ""
    is_zip = head.startswith(b"PK\x03\x04")
    if suffix in ("xlsx", "xlsm"):
        if not is_zip:
            raise _unreadable("The file is not an xlsx workbook (an old .xls? save it as .xlsx).")
        return SheetFormat.xlsx
    if suffix in ("csv", "txt"):
        if is_zip or head.startswith(b"\xd0\xcf\x11\xe0"):
            raise _unreadable("The file is a spreadsheet, not csv text: name it .xlsx.")
        return SheetFormat.csv
    raise _unreadable("Upload an .xlsx workbook or a .csv file.")


def _csv_encoding(file: IO[bytes]) -> str:
    """UTF-8 (a BOM is dropped) when the whole file decodes as such, else GB18030."""
    for encoding in ("utf-8-sig", "gb18030"):
        decoder = codecs.getincrementaldecoder(encoding)()
        file.seek(0)
        try:
            while chunk := file.read(1_048_576):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            continue
        finally:
            file.seek(0)
        return encoding
    raise _unreadable("The csv file is neither UTF-8 nor GB18030 text.")


# --- writing --------------------------------------------------------------------------------


class SheetWriter:
    """Rows into an xlsx (openpyxl write-only: rows go to a temporary file as they come) or
    a csv (UTF-8 with BOM, so that Excel shows Chinese). Text never becomes a formula."""

    def __init__(self, fmt: SheetFormat, header: Sequence[Any]) -> None:
        self.format = fmt
        if fmt is SheetFormat.xlsx:
            self._workbook = Workbook(write_only=True)
            self._sheet = self._workbook.create_sheet()
        else:
            self._buffer = io.StringIO()
            self._buffer.write("\ufeff")
            self._csv = csv.writer(self._buffer, lineterminator="\r\n")
        self.append(header)

    def append(self, values: Sequence[Any]) -> None:
        if self.format is SheetFormat.xlsx:
            self._sheet.append([self._xlsx_cell(v) for v in values])
        else:
            self._csv.writerow(["" if v is None else guard(_csv_text(v)) for v in values])

    def _xlsx_cell(self, value: Any) -> Any:
        if isinstance(value, datetime):
            value = value.date() if value.time() == time() else value
        if isinstance(value, date) and not isinstance(value, datetime):
            cell = WriteOnlyCell(self._sheet, value=value)
            cell.number_format = "yyyy-mm-dd"
            return cell
        if not isinstance(value, str):
            return value
        value = ILLEGAL_CHARACTERS_RE.sub("", value)
        cell = WriteOnlyCell(self._sheet, value=value)
        cell.data_type = "s"  # never a formula or an error code, whatever the text
        return cell

    def take(self) -> bytes:
        """The csv text so far (and empties the buffer); for streaming csv."""
        data = self._buffer.getvalue().encode("utf-8")
        self._buffer.seek(0)
        self._buffer.truncate()
        return data

    def finish(self) -> bytes:
        if self.format is SheetFormat.csv:
            return self.take()
        out = io.BytesIO()
        self._workbook.save(out)
        return out.getvalue()


def _csv_text(value: Any) -> str:
    if isinstance(value, datetime) and value.time() == time():
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def media_type(fmt: SheetFormat) -> str:
    return XLSX_MEDIA_TYPE if fmt is SheetFormat.xlsx else CSV_MEDIA_TYPE
