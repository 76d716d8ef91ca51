// The dashboard: log in, pick an org and a year, read GET /api/v1/reports/orgs/{id}?year=
// and show it as tables and inline SVG charts. No library, nothing fetched from elsewhere;
// every text from the server goes in through textContent, never as markup.
"use strict";

(() => {
  const API = "/api/v1";
  const STORE = "lianxin.dashboard.tokens";
  const SVG = "http://www.w3.org/2000/svg";

  const LABELS = {
    total: "合计", unknown: "不详",
    committee: "党委", working_committee: "工委", general_branch: "党总支", branch: "党支部",
    group: "党小组",
    city: "市", county: "县（区）", street: "街道", town: "镇", community: "社区",
    building: "楼道", work_unit: "单位",
    community_staff: "社区工作人员", new_economic_org: "新经济组织", retired: "离退休",
    laid_off: "下岗失业", migrant_worker: "外来务工", rural_to_urban: "农转非",
    in_service_resident: "在职居住地党员", retired_unit_resident: "单位退休居住地党员",
    other: "其他",
    enrolled: "组织关系在册", resident: "居住地",
    le_35: "35岁及以下", "36_45": "36—45岁", "46_60": "46—60岁", gt_60: "60岁以上",
    junior_high_or_below: "初中及以下", senior_high: "高中（中专）", college_or_above: "大专及以上",
    active: "正常", lost_contact: "失联", returned: "已返回",
    branch_assembly: "支部党员大会", branch_committee: "支委会", group_meeting: "党小组会",
    party_lecture: "党课", theme_day: "主题党日", online_lesson: "远程教育", salon: "沙龙",
    training: "培训", volunteer_service: "志愿服务", home_visit: "走访", birthday_visit: "生日慰问",
    talk: "谈心谈话", patrol: "巡逻", cleanup: "环境整治",
  };
  const ORDER = {
    by_age_band: ["le_35", "36_45", "46_60", "gt_60", "unknown"],
    by_education_band: ["junior_high_or_below", "senior_high", "college_or_above", "unknown"],
  };
  const label = (key) => LABELS[key] || key;

  const $ = (id) => document.getElementById(id);
  const state = { me: null, org: null, trail: [], report: null, searchTimer: 0, loadSeq: 0 };

  // ---- tokens: in sessionStorage only (gone with the tab), refreshed once on a 401 ----

  function tokens() {
    try {
      return JSON.parse(sessionStorage.getItem(STORE) || "null");
    } catch {
      return null;
    }
  }
  function saveTokens(pair) {
    sessionStorage.setItem(
      STORE,
      JSON.stringify({ access: pair.access_token, refresh: pair.refresh_token }),
    );
  }
  function clearTokens() {
    sessionStorage.removeItem(STORE);
  }

  let refreshing = null; // one refresh at a time: a refresh token works once
  function refresh() {
    if (!refreshing) {
      refreshing = (async () => {
        const t = tokens();
        if (!t || !t.refresh) return false;
        const r = await fetch(`${API}/auth/refresh`, {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify({ refresh_token: t.refresh }),
        });
        if (!r.ok) {
          clearTokens();
          return false;
        }
        saveTokens(await r.json());
        return true;
      })().finally(() => {
        refreshing = null;
      });
    }
    return refreshing;
  }

  class LoggedOut extends Error {}

  async function api(path, accept = "application/json") {
    for (let attempt = 0; attempt < 2; attempt++) {
      const t = tokens();
      if (!t) throw new LoggedOut();
      const r = await fetch(API + path, {
        headers: { Authorization: `Bearer ${t.access}`, Accept: accept },
      });
      if (r.status !== 401) return r;
      if (attempt === 0 && !(await refresh())) break;
    }
    clearTokens();
    throw new LoggedOut();
  }

  async function problem(r) {
    try {
      const body = await r.json();
      return body.detail || body.title || `HTTP ${r.status}`;
    } catch {
      return `HTTP ${r.status}`;
    }
  }

  async function json(path) {
    const r = await api(path);
    if (!r.ok) throw new Error(await problem(r));
    return r.json();
  }

  function status(text) {
    $("status").textContent = text || "";
  }

  function failed(err) {
    if (err instanceof LoggedOut) {
      showLogin("登录已过期，请重新登录。");
      return;
    }
    status(`出错了：${err.message}`);
  }

  // ---- small DOM helpers ----

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const fmtInt = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString("zh-CN"));
  const fmtShare = (s) => (s === null || s === undefined ? "—" : `${(s * 100).toFixed(2)}%`);
  // Yuan come as decimal strings ("1234.50"): grouped, the decimals kept as given.
  const fmtMoney = (m) => {
    if (m === null || m === undefined) return "—";
    const [whole, cents] = String(m).split(".");
    return `${Number(whole).toLocaleString("zh-CN")}${cents === undefined ? "" : `.${cents}`} 元`;
  };
  // Rough text width in the charts' 12px font: CJK characters are square, others narrow.
  const textWidth = (t) => [...t].reduce((w, c) => w + (c.codePointAt(0) > 0x2e7f ? 12 : 7), 0);

  // ---- login ----

  function showLogin(message) {
    state.me = null;
    $("who").hidden = true;
    $("picker").hidden = true;
    $("report").hidden = true;
    $("login").hidden = false;
    const error = $("login-error");
    error.hidden = !message;
    error.textContent = message || "";
    status("");
    $("username").focus();
  }

  async function login(event) {
    event.preventDefault();
    const form = event.target;
    const button = form.querySelector("button");
    button.disabled = true;
    $("login-error").hidden = true;
    try {
      const r = await fetch(`${API}/auth/token`, {
        method: "POST",
        headers: { Accept: "application/json" },
        body: new URLSearchParams({ username: $("username").value, password: $("password").value }),
      });
      if (!r.ok) {
        showLogin(r.status === 401 ? "用户名或密码不对。" : await problem(r));
        return;
      }
      saveTokens(await r.json());
      $("password").value = "";
      await start();
    } catch (err) {
      showLogin(`无法登录：${err.message}`);
    } finally {
      button.disabled = false;
    }
  }

  async function logout() {
    const t = tokens();
    clearTokens();
    if (t && t.refresh) {
      fetch(`${API}/auth/logout`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: t.refresh }),
      }).catch(() => {});
    }
    showLogin("");
  }

  // ---- org picker: the orgs the caller can see, as a tree to drill into, or a search ----

  async function start() {
    try {
      state.me = await json("/auth/me");
    } catch (err) {
      if (err instanceof LoggedOut) return showLogin("");
      return showLogin(err.message);
    }
    $("login").hidden = true;
    $("who").hidden = false;
    $("who-name").textContent = `${state.me.username}（${state.me.role}）`;
    $("picker").hidden = false;
    const fromHash = new URLSearchParams(location.hash.slice(1));
    const year = Number(fromHash.get("year"));
    $("year").value = year >= 2000 && year <= 2100 ? year : new Date().getFullYear();
    state.trail = [];
    await showTop();
    const orgId = fromHash.get("org");
    if (orgId) {
      try {
        const org = await json(`/registry/orgs/${encodeURIComponent(orgId)}`);
        select(org);
      } catch (err) {
        failed(err);
      }
    }
  }

  async function topOrgs() {
    if (state.me.org_id) return [await json(`/registry/orgs/${state.me.org_id}`)];
    // An admin sees every tree: the roots (depth 0) among the first orgs and the cities.
    const [first, cities] = await Promise.all([
      json("/registry/orgs?limit=200"),
      json("/registry/orgs?area_level=city&limit=200"),
    ]);
    const seen = new Set();
    return [...first.items, ...cities.items].filter((o) => {
      if (seen.has(o.id) || (o.depth !== 0 && o.area_level !== "city")) return false;
      seen.add(o.id);
      return true;
    });
  }

  async function showTop() {
    status("正在读取组织…");
    try {
      state.trail = [];
      renderOrgs(await topOrgs(), null);
      status("");
    } catch (err) {
      failed(err);
    }
  }

  async function drill(org) {
    status("正在读取下级组织…");
    try {
      const page = await json(`/registry/orgs/${org.id}/children?limit=500`);
      const at = state.trail.findIndex((o) => o.id === org.id);
      state.trail = at >= 0 ? state.trail.slice(0, at + 1) : [...state.trail, org];
      renderOrgs(page.items, page.next_cursor ? "只列出前 500 个下级组织，请用查找。" : null);
      status(page.items.length ? "" : "没有下级组织。");
    } catch (err) {
      failed(err);
    }
  }

  async function search() {
    const q = $("org-search").value.trim();
    if (!q) return showTop();
    status("正在查找…");
    try {
      const page = await json(`/registry/orgs?q=${encodeURIComponent(q)}&limit=50`);
      state.trail = [];
      renderOrgs(page.items, page.next_cursor ? "只列出前 50 个结果。" : null, q);
      status(page.items.length ? "" : "没有找到。");
    } catch (err) {
      failed(err);
    }
  }

  function renderCrumbs(query) {
    const crumbs = $("crumbs");
    crumbs.replaceChildren();
    const top = el("button", { type: "button", class: "small", text: "全部" });
    top.addEventListener("click", () => {
      $("org-search").value = "";
      showTop();
    });
    crumbs.append(top);
    if (query) crumbs.append(el("span", { text: "›" }), el("b", { text: `查找“${query}”` }));
    for (const org of state.trail) {
      const b = el("button", { type: "button", class: "small", text: org.name });
      b.addEventListener("click", () => drill(org));
      crumbs.append(el("span", { text: "›" }), b);
    }
  }

  function renderOrgs(orgs, note, query) {
    renderCrumbs(query);
    const list = $("org-list");
    list.replaceChildren();
    for (const org of orgs) {
      const pick = el(
        "button",
        {
          type: "button",
          class: "pick",
          "data-org-id": org.id,
          "aria-pressed": String(state.org !== null && state.org.id === org.id),
        },
        org.name,
        el("small", { text: `${label(org.kind)} · ${label(org.area_level)}` }),
      );
      pick.addEventListener("click", () => select(org));
      const down = el("button", {
        type: "button",
        class: "down",
        "data-drill-id": org.id,
        "aria-label": `${org.name} 的下级组织`,
        title: "下级组织",
        text: "下级 ›",
      });
      down.addEventListener("click", () => drill(org));
      list.append(el("li", {}, pick, down));
    }
    $("org-note").hidden = !note;
    $("org-note").textContent = note || "";
  }

  function select(org) {
    state.org = org;
    for (const b of document.querySelectorAll("#org-list .pick")) {
      b.setAttribute("aria-pressed", String(b.dataset.orgId === org.id));
    }
    loadReport();
  }

  function year() {
    const y = Number($("year").value);
    return Number.isInteger(y) && y >= 2000 && y <= 2100 ? y : null;
  }

  // ---- the report ----

  async function loadReport() {
    const y = year();
    if (!state.org) return;
    if (y === null) return status("年度应在 2000 到 2100 之间。");
    const seq = ++state.loadSeq;
    const org = state.org;
    history.replaceState(null, "", `#org=${org.id}&year=${y}`);
    status(`正在读取 ${org.name} ${y} 年的报表…`);
    $("report").setAttribute("aria-busy", "true");
    try {
      const report = await json(`/reports/orgs/${org.id}?year=${y}`);
      if (seq !== state.loadSeq) return; // a later choice won
      state.report = report;
      renderReport(org, report);
      status("");
    } catch (err) {
      if (seq === state.loadSeq) failed(err);
    } finally {
      if (seq === state.loadSeq) $("report").removeAttribute("aria-busy");
    }
  }

  async function download(format, event) {
    event.preventDefault();
    if (!state.org || !state.report) return;
    const y = state.report.year;
    status("正在生成文件…");
    try {
      const r = await api(`/reports/orgs/${state.org.id}?year=${y}&format=${format}`, "*/*");
      if (!r.ok) throw new Error(await problem(r));
      const url = URL.createObjectURL(await r.blob());
      const a = el("a", { href: url, download: `report-${state.org.id}-${y}.${format}` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 30000);
      status("");
    } catch (err) {
      failed(err);
    }
  }

  function renderReport(org, report) {
    $("report").hidden = false;
    $("report-title").textContent = `${org.name} · ${report.year} 年统计`;
    $("report-meta").textContent = report.age_as_of
      ? `组织代码 ${org.code}；年龄计算截至 ${report.age_as_of}`
      : `组织代码 ${org.code}`;
    const missing = report.incomplete || [];
    $("incomplete").hidden = missing.length === 0;
    $("incomplete").textContent = missing.length
      ? `部分服务未响应（${missing.join("、")}），相关数据暂缺。`
      : "";
    renderKpis(report);
    renderSections(report);
  }

  function kpi(name, text, figure) {
    return el(
      "div",
      { class: "kpi" },
      el("div", { class: "label", text: name }),
      el("div", { class: "value", "data-figure": figure, text }),
    );
  }

  function renderKpis(r) {
    const m = r.members, f = r.flows, d = r.dual_management;
    $("kpis").replaceChildren(
      kpi("党员", fmtInt(m && m.total), "members.total"),
      kpi("党组织", fmtInt(r.orgs && r.orgs.total), "orgs.total"),
      kpi("流入", fmtInt(f && f.inflow), "flows.inflow"),
      kpi("流出", fmtInt(f && f.outflow), "flows.outflow"),
      kpi("在职党员报到率", fmtShare(d && d.report_rate), "dual_management.report_rate"),
      kpi("活动", fmtInt(r.activities && r.activities.total), "activities.total"),
      kpi("人均经费", fmtMoney(r.funds && r.funds.per_member), "funds.per_member"),
    );
  }

  // The bands in their natural order, other values as the server gave them, `unknown` last.
  function ordered(figure, key) {
    const order = ORDER[key] || [];
    const rank = (k) => (k === "unknown" ? 2 : order.includes(k) ? 0 : 1);
    return Object.keys(figure).sort(
      (a, b) => rank(a) - rank(b) || (rank(a) === 0 ? order.indexOf(a) - order.indexOf(b) : 0),
    );
  }

  // A horizontal bar per value, `unknown` in grey; the numbers are in the table below.
  function barChart(items, title) {
    const W = 360, LABEL = 118, ROW = 24;
    const VALUE = Math.min(130, Math.max(40, 10 + Math.max(...items.map((i) => textWidth(i.text)))));
    const max = Math.max(1, ...items.map((i) => i.value));
    const chart = svg("svg", {
      class: "chart",
      viewBox: `0 0 ${W} ${Math.max(ROW, items.length * ROW)}`,
      role: "img",
      "aria-label": title,
    });
    items.forEach((item, i) => {
      const y = i * ROW;
      const room = W - LABEL - VALUE;
      chart.append(
        svg("text", { x: LABEL - 6, y: y + 16, "text-anchor": "end" }, item.label),
        svg("rect", { class: "track", x: LABEL, y: y + 5, width: room, height: 14, rx: 2 }),
        svg("rect", {
          class: `bar${item.unknown ? " unknown" : ""}${item.alt ? " alt" : ""}`,
          x: LABEL,
          y: y + 5,
          width: Math.max(item.value > 0 ? 1.5 : 0, (room * item.value) / max),
          height: 14,
          rx: 2,
        }),
        svg("text", { x: W - 2, y: y + 16, "text-anchor": "end" }, item.text),
      );
    });
    return chart;
  }

  // A ring for one rate (report rate, attendance, coverage).
  function ring(rate, title) {
    const R = 46, C = 2 * Math.PI * R;
    const chart = svg("svg", { class: "chart ring-chart", viewBox: "0 0 360 120", role: "img", "aria-label": title });
    chart.append(svg("circle", { class: "ring", cx: 60, cy: 60, r: R }));
    if (rate !== null && rate !== undefined) {
      const value = svg("circle", {
        class: "ring-value",
        cx: 60,
        cy: 60,
        r: R,
        "stroke-dasharray": `${(C * Math.min(1, rate)).toFixed(2)} ${C.toFixed(2)}`,
        transform: "rotate(-90 60 60)",
      });
      chart.append(value);
    }
    chart.append(
      svg("text", { class: "big", x: 60, y: 66, "text-anchor": "middle" }, fmtShare(rate)),
      svg("text", { x: 125, y: 65 }, title),
    );
    return chart;
  }

  function breakdownTable(section, key, figure) {
    const body = el("tbody");
    for (const item of ordered(figure, key)) {
      const c = figure[item];
      const path = `${section}.${key}.${item}`;
      body.append(
        el(
          "tr",
          { class: item === "unknown" ? "unknown" : null, "data-item": path },
          el("td", { text: label(item) }),
          el("td", { class: "n", "data-figure": `${path}.count`, text: fmtInt(c.count) }),
          el("td", { class: "n", "data-figure": `${path}.share`, text: fmtShare(c.share) }),
        ),
      );
    }
    return el(
      "table",
      {},
      el(
        "thead",
        {},
        el("tr", {}, el("th", { text: "项目" }), el("th", { class: "n", text: "人数/个数" }), el("th", { class: "n", text: "占比" })),
      ),
      body,
    );
  }

  function breakdownBlock(section, key, figure, title) {
    const keys = ordered(figure, key);
    const items = keys.map((k) => ({
      label: label(k),
      value: figure[k].count,
      text: fmtInt(figure[k].count),
      unknown: k === "unknown",
    }));
    return [barChart(items, title), breakdownTable(section, key, figure)];
  }

  function valueTable(rows) {
    const body = el("tbody");
    for (const [name, text, figure] of rows) {
      body.append(el("tr", {}, el("td", { text: name }), el("td", { class: "n", "data-figure": figure, text })));
    }
    return el("table", {}, body);
  }

  const sub = (text) => el("h4", { text });

  function card(title, id, ...content) {
    const c = el("section", { class: "card", "data-section": id }, el("h3", { text: title }));
    if (content.length === 0) c.append(el("p", { class: "empty", text: "数据暂缺（服务未响应）" }));
    for (const part of content.flat()) c.append(part);
    return c;
  }

  function renderSections(r) {
    const cards = [];
    const m = r.members;
    const section = (title, id, available, build) =>
      cards.push(available ? card(title, id, ...build()) : card(title, id));

    section("党员类别", "members.by_category", m, () =>
      breakdownBlock("members", "by_category", m.by_category, "党员类别"));
    section("年龄结构", "members.by_age_band", m, () =>
      breakdownBlock("members", "by_age_band", m.by_age_band, "年龄结构"));
    section("文化程度", "members.by_education_band", m, () =>
      breakdownBlock("members", "by_education_band", m.by_education_band, "文化程度"));

    const f = r.flows;
    section("流入流出", "flows", f, () => {
      const t = f.transfers;
      const items = [
        { label: "流入", value: f.inflow || 0, text: fmtInt(f.inflow) },
        { label: "流出", value: f.outflow || 0, text: fmtInt(f.outflow), alt: true },
      ];
      if (t) {
        items.push({ label: "组织关系转入", value: t.in, text: fmtInt(t.in) });
        items.push({ label: "组织关系转出", value: t.out, text: fmtInt(t.out), alt: true });
      }
      return [
        barChart(items, "流入流出"),
        valueTable([
          ["流入（流动党员）", fmtInt(f.inflow), "flows.inflow"],
          ["流出（流动党员）", fmtInt(f.outflow), "flows.outflow"],
          ["组织关系转入", fmtInt(t && t.in), "flows.transfers.in"],
          ["组织关系转出", fmtInt(t && t.out), "flows.transfers.out"],
        ]),
      ];
    });

    const d = r.dual_management;
    section("在职党员到社区报到", "dual_management", d, () => [
      ring(d.report_rate, "报到率"),
      valueTable([
        ["双重管理关系", fmtInt(d.links), "dual_management.links"],
        ["已报到", fmtInt(d.reported), "dual_management.reported"],
        ["报到率", fmtShare(d.report_rate), "dual_management.report_rate"],
      ]),
    ]);

    const mob = r.mobile;
    section("流动党员状态", "mobile.by_status", mob, () =>
      breakdownBlock("mobile", "by_status", mob.by_status, "流动党员状态"));

    const a = r.activities;
    section("组织生活与活动", "activities", a, () => [
      ...(a.total > 0
        ? breakdownBlock("activities", "by_type", a.by_type, "活动类型")
        : [
            el("p", { class: "empty", text: "本年度没有活动记录。" }),
            breakdownTable("activities", "by_type", a.by_type),
          ]),
      valueTable([
        ["活动合计", fmtInt(a.total), "activities.total"],
        ["出席率", fmtShare(a.attendance_rate), "activities.attendance_rate"],
        ["组织生活出席率", fmtShare(a.organizational_life_attendance_rate),
          "activities.organizational_life_attendance_rate"],
      ]),
    ]);

    const fu = r.funds;
    section("活动经费", "funds", fu, () => {
      const allocated = Number(fu.allocated), spent = Number(fu.spent);
      return [
        barChart(
          [
            { label: "下拨", value: allocated, text: fmtMoney(fu.allocated) },
            { label: "支出", value: spent, text: fmtMoney(fu.spent), alt: true },
          ],
          "活动经费",
        ),
        valueTable([
          ["下拨", fmtMoney(fu.allocated), "funds.allocated"],
          ["支出", fmtMoney(fu.spent), "funds.spent"],
          ["人均（元/人·年）", fmtMoney(fu.per_member), "funds.per_member"],
        ]),
      ];
    });

    const o = r.orgs;
    section("党组织", "orgs", o, () => [
      sub("按组织类型"),
      ...breakdownBlock("orgs", "by_kind", o.by_kind, "按组织类型"),
      sub("按区域层级"),
      breakdownTable("orgs", "by_area_level", o.by_area_level),
    ]);
    section("组织关系", "members.by_relation", m, () =>
      breakdownBlock("members", "by_relation", m.by_relation, "组织关系"));

    const w = r.party_workers;
    section("党务工作者", "party_workers", w, () => [
      valueTable([["合计", fmtInt(w.total), "party_workers.total"]]),
      sub("年龄结构"),
      ...breakdownBlock("party_workers", "by_age_band", w.by_age_band, "党务工作者年龄"),
      sub("文化程度"),
      ...breakdownBlock("party_workers", "by_education_band", w.by_education_band, "党务工作者文化程度"),
    ]);

    const p = r.pledges;
    cards.push(
      card(
        "其他",
        "other",
        valueTable([
          ["谈心谈话（次）", fmtInt(r.talks), "talks"],
          ["志愿服务时长（已核实，小时）", r.service_hours === null ? "—" : r.service_hours, "service_hours"],
          ["已践诺事项", fmtInt(p && p.items_done), "pledges.items_done"],
          ["践诺完成率", fmtShare(p && p.completion_rate), "pledges.completion_rate"],
          ["党务工作者轮训覆盖率", fmtShare(r.training_coverage), "training_coverage"],
        ]),
      ),
    );
    $("sections").replaceChildren(...cards);
  }

  // ---- wiring ----

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("year").addEventListener("change", loadReport);
    $("org-search").addEventListener("input", () => {
      clearTimeout(state.searchTimer);
      state.searchTimer = setTimeout(search, 300);
    });
    $("dl-xlsx").addEventListener("click", (e) => download("xlsx", e));
    $("dl-html").addEventListener("click", (e) => download("html", e));
    if (tokens()) start();
    else showLogin("");
  });
})();
