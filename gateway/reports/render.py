"""The report as an xlsx workbook (one sheet per section) and as a printable HTML page
(Chinese labels, no external assets, one inline stylesheet allowed by its own CSP nonce).

Every sheet has the columns `figure`, `item`, `名称`, `count / value`, `share`: a breakdown
gives one row per value (`figure` = `by_kind`, `item` = `branch`, count and share), a single
figure one row (`item` empty, its value in the fourth column). Money and hours are numbers
with two decimals in the workbook, the same figures as the JSON's decimal strings."""

from __future__ import annotations

import html
import io
import secrets
from collections.abc import Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from openpyxl import Workbook

SECTIONS = (
    "orgs",
    "members",
    "flows",
    "dual_management",
    "mobile",
    "activities",
    "talks",
    "service_hours",
    "pledges",
    "party_workers",
    "training_coverage",
    "funds",
)
HEADER = ("figure", "item", "名称", "count / value", "share")

LABELS: dict[str, str] = {
    # sections
    "orgs": "党组织",
    "members": "党员",
    "flows": "流入流出",
    "dual_management": "双重管理",
    "mobile": "流动党员",
    "activities": "活动",
    "talks": "谈心谈话",
    "service_hours": "志愿服务时长（已核实）",
    "pledges": "承诺践诺",
    "party_workers": "党务工作者",
    "training_coverage": "轮训覆盖率",
    "funds": "活动经费",
    # figures
    "total": "合计",
    "by_kind": "按组织类型",
    "by_area_level": "按区域层级",
    "by_category": "按党员类别",
    "by_relation": "按组织关系",
    "by_age_band": "按年龄段",
    "by_education_band": "按文化程度",
    "by_status": "按状态",
    "by_type": "按活动类型",
    "inflow": "流入",
    "outflow": "流出",
    "transfers": "组织关系转接",
    "in": "转入",
    "out": "转出",
    "links": "双重管理关系",
    "reported": "已报到",
    "report_rate": "报到率",
    "attendance_rate": "出席率",
    "organizational_life_attendance_rate": "组织生活出席率",
    "items_done": "已践诺事项",
    "completion_rate": "践诺完成率",
    "allocated": "下拨",
    "spent": "支出",
    "per_member": "人均",
    # values
    "unknown": "不详",
    "committee": "党委",
    "working_committee": "工委",
    "general_branch": "党总支",
    "branch": "党支部",
    "group": "党小组",
    "city": "市",
    "county": "县（区）",
    "street": "街道",
    "town": "镇",
    "community": "社区",
    "building": "楼道",
    "work_unit": "单位",
    "community_staff": "社区工作人员",
    "new_economic_org": "新经济组织",
    "retired": "离退休",
    "laid_off": "下岗失业",
    "migrant_worker": "外来务工",
    "rural_to_urban": "农转非",
    "in_service_resident": "在职居住地党员",
    "retired_unit_resident": "单位退休居住地党员",
    "other": "其他",
    "enrolled": "组织关系在册",
    "resident": "居住地",
    "le_35": "35岁及以下",
    "36_45": "36—45岁",
    "46_60": "46—60岁",
    "gt_60": "60岁以上",
    "junior_high_or_below": "初中及以下",
    "senior_high": "高中（中专）",
    "college_or_above": "大专及以上",
    "active": "正常",
    "lost_contact": "失联",
    "returned": "已返回",
}
MONEY = frozenset({"service_hours", "allocated", "spent", "per_member"})


def label(key: str) -> str:
    return LABELS.get(key, key)


def _is_breakdown(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(v, Mapping) and "count" in v for v in value.values()
    )


def _number(key: str, value: Any, numeric: bool = True) -> Any:
    if numeric and key in MONEY and isinstance(value, str):
        try:
            return float(Decimal(value))
        except InvalidOperation:
            return value
    return value


def section_rows(name: str, value: Any, *, numeric: bool = True) -> Iterator[tuple[Any, ...]]:
    """(figure, item, label, count or value, share) rows of one section; `numeric` turns
    money and hours (decimal strings) into numbers."""
    if not isinstance(value, Mapping):
        yield (name, "", label(name), _number(name, value, numeric), None)
        return
    for key, figure in value.items():
        if _is_breakdown(figure):
            for item, c in figure.items():
                yield (key, item, f"{label(key)}·{label(item)}", c["count"], c["share"])
        elif isinstance(figure, Mapping):
            for item, v in figure.items():
                yield (key, item, f"{label(key)}·{label(item)}", _number(item, v, numeric), None)
        else:
            yield (key, "", label(key), _number(key, figure, numeric), None)


def xlsx_bytes(report: Mapping[str, Any]) -> bytes:
    wb = Workbook(write_only=True)
    about = wb.create_sheet("report")
    about.append(("org_id", str(report["org_id"])))
    about.append(("year", report["year"]))
    about.append(("age_as_of", str(report.get("age_as_of") or "")))
    about.append(("incomplete", ", ".join(report.get("incomplete") or [])))
    for name in SECTIONS:
        sheet = wb.create_sheet(name)
        sheet.append(HEADER)
        value = report.get(name)
        if value is None:
            sheet.append((name, "", label(name), None, None))  # a source did not answer
            continue
        for row in section_rows(name, value):
            sheet.append(row)
    buffer = io.BytesIO()
    wb.save(buffer)
    return buffer.getvalue()


_STYLE = """
body { font-family: "Songti SC", "SimSun", serif; margin: 2em; color: #000; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #444; padding: 0.2em 0.6em; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
section { break-inside: avoid; }
@media print { body { margin: 0; } }
"""


def _cell(value: Any, *, share: bool = False) -> str:
    if value is None:
        return "—"
    if share and isinstance(value, int | float):
        return f"{value * 100:.2f}%"
    return html.escape(str(value))


def report_html(report: Mapping[str, Any]) -> tuple[str, str]:
    """The page and the nonce of its only stylesheet (for the response's CSP)."""
    nonce = secrets.token_urlsafe(16)
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN"><head><meta charset="utf-8">',
        f"<title>党建统计报表 {e(str(report['year']))}</title>",
        f'<style nonce="{nonce}">{_STYLE}</style></head><body>',
        f"<h1>社区党建统计报表（{e(str(report['year']))}年）</h1>",
        f"<p>组织：{e(str(report['org_id']))}；年龄计算截至："
        f"{e(str(report.get('age_as_of') or '—'))}</p>",
    ]
    if report.get("incomplete"):
        parts.append(
            f"<p><strong>数据不完整：</strong>{e(', '.join(report['incomplete']))} 未响应</p>"
        )
    for name in SECTIONS:
        value = report.get(name)
        parts.append(f'<section id="{e(name)}"><h2>{e(label(name))}</h2>')
        if value is None:
            parts.append("<p>—（数据源未响应）</p></section>")
            continue
        parts.append(
            "<table><thead><tr><th>项目</th><th>数量</th><th>占比</th></tr></thead><tbody>"
        )
        for figure, _item, name_zh, amount, share in section_rows(name, value, numeric=False):
            shown_share = _cell(share, share=True) if share is not None else ""
            rate = isinstance(amount, float) and (
                str(figure).endswith("rate") or name.endswith("coverage")
            )
            parts.append(
                f"<tr><td>{e(name_zh)}</td>"
                f'<td class="n">{_cell(amount, share=rate)}</td>'
                f'<td class="n">{shown_share}</td></tr>'
            )
        parts.append("</tbody></table></section>")
    parts.append("</body></html>")
    return "".join(parts), nonce
