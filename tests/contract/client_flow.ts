/**
 * The integrator's flow with the generated TypeScript client (`tools/clients.py`), run by
 * tests/contract/test_clients.py with node against a running system, after `tsc --noEmit`
 * has checked it against the generated `schema.d.ts`: a call that no longer fits the
 * OpenAPI document fails the type check.
 *
 * Env: LIANXIN_URL, LIANXIN_USER, LIANXIN_PASSWORD, FLOW_PREFIX (org codes and keys),
 * FLOW_MEMBERS (how many to register), FLOW_YEAR (the report's year), FLOW_BIRTH_YEAR (of
 * the registered members: ID numbers distinct from other flows on the same system).
 * Prints one JSON object with what it saw; exits non-zero on any unexpected answer.
 */
import { isDeepStrictEqual } from "node:util";

import { everyItem, lianxin, logIn, type Schemas } from "./lianxin.ts";

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

/** A GB 11643 citizen ID number: region, birth date, serial (odd for men), check digit. */
function idNumber(birth: string, serial: number, region = "330402"): string {
  const body = `${region}${birth.replaceAll("-", "")}${String(serial).padStart(3, "0")}`;
  const weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
  const sum = [...body].reduce((total, digit, i) => total + Number(digit) * (weights[i] ?? 0), 0);
  return body + "10X98765432"[sum % 11];
}

/** `data` of a 2xx answer, or throws with the problem. */
function ok<T>(what: string, answer: { data?: T; error?: unknown; response: Response }): T {
  if (answer.data === undefined) {
    throw new Error(`${what}: ${answer.response.status} ${JSON.stringify(answer.error)}`);
  }
  return answer.data;
}

const base = env("LIANXIN_URL");
const prefix = env("FLOW_PREFIX");
const memberCount = Number(env("FLOW_MEMBERS"));
const year = Number(env("FLOW_YEAR"));
const birthYear = Number(env("FLOW_BIRTH_YEAR"));

const pair = await logIn(base, env("LIANXIN_USER"), env("LIANXIN_PASSWORD"));
const api = lianxin(base, { token: pair.access_token });
const me = ok("me", await api.GET("/api/v1/auth/me"));

async function createOrg(body: Schemas["OrgCreate"]): Promise<Schemas["OrgPublic"]> {
  return ok(
    `org ${body.code}`,
    await api.POST("/api/v1/registry/orgs", {
      body,
      params: { header: { "Idempotency-Key": `${prefix}-org-${body.code}` } },
    }),
  );
}

const city = await createOrg({
  code: `${prefix}-CITY`,
  name: "客户端示范市委",
  kind: "committee",
  area_level: "city",
});
const community = await createOrg({
  code: `${prefix}-COMM`,
  name: "客户端社区党支部",
  kind: "branch",
  area_level: "community",
  parent_id: city.id,
});
const unit = await createOrg({
  code: `${prefix}-UNIT`,
  name: "客户端电力局党委",
  kind: "committee",
  area_level: "work_unit",
  parent_id: city.id,
});

const created: string[] = [];
for (let n = 0; n < memberCount; n++) {
  const birth = `${birthYear}-0${1 + (n % 9)}-1${n % 10}`;
  const member = ok(
    `member ${n}`,
    await api.POST("/api/v1/registry/members", {
      body: {
        name: `客户端党员${n}`,
        gender: "male",
        birth_date: birth,
        id_number: idNumber(birth, 2 * n + 1),
        phone: "13812345678",
        education: "senior_high",
        membership: "full",
        category: "retired",
        org_id: community.id,
      },
      params: { header: { "Idempotency-Key": `${prefix}-member-${n}` } },
    }),
  );
  created.push(member.id);
}

// Every member of the city's subtree, two a page, following `next_cursor`.
const paged: string[] = [];
let pages = 0;
for await (const member of everyItem(async (cursor) => {
  pages += 1;
  return ok(
    "members page",
    await api.GET("/api/v1/registry/members", {
      params: { query: { org_id: city.id, limit: 2, cursor } },
    }),
  );
})) {
  paged.push(member.id);
}

const issued = ok(
  "api key",
  await api.POST("/api/v1/auth/api-keys", {
    body: { name: "客户端人事系统", org_id: unit.id, scopes: ["sync"] },
  }),
);
if (!issued.key) throw new Error("the new API key was not shown");
const unitApi = lianxin(base, { apiKey: issued.key });

const rows: Schemas["SyncMember"][] = [0, 1, 2].map((n) => {
  const birth = `${birthYear + 10}-0${n + 1}-2${n}`;
  return {
    external_id: `${prefix}-E-${n}`,
    name: `在职党员${n}`,
    id_number: idNumber(birth, 2 * n + 1),
    residence_community_code: community.code,
  };
});
const good = rows[0];
if (good === undefined) throw new Error("no rows");
// A wrong check digit: answered in `errors` by its index, the other rows are kept.
const last = good.id_number.at(-1) === "0" ? "1" : "0";
rows.push({ ...good, external_id: `${prefix}-E-bad`, id_number: good.id_number.slice(0, 17) + last });

async function sync(): Promise<Schemas["SyncResult"]> {
  // Mobility learns of new orgs from the registry's events: until the unit's org has
  // arrived the sync answers 404, which a client retries for a while.
  const deadline = Date.now() + 30_000;
  for (;;) {
    const answer = await unitApi.PUT("/api/v1/mobility/sync/{org_id}/members", {
      params: { path: { org_id: unit.id }, header: { "Idempotency-Key": `${prefix}-night-1` } },
      body: { mode: "full", members: rows },
    });
    if (answer.response.status !== 404 || Date.now() > deadline) return ok("sync", answer);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}
const synced = await sync();
const replayed = await sync();

const report = ok(
  "report",
  await api.GET("/api/v1/reports/orgs/{org_id}", {
    params: { path: { org_id: city.id }, query: { year } },
  }),
);

console.log(
  JSON.stringify({
    me: { username: me.username, role: me.role },
    orgs: { city: city.id, community: community.id, unit: unit.id },
    created,
    paged,
    pages,
    sync: synced,
    replay_identical: isDeepStrictEqual(replayed, synced),
    report: {
      org_id: report.org_id,
      year: report.year,
      orgs_total: report.orgs?.total ?? null,
      members_total: report.members?.total ?? null,
      links: report.dual_management?.links ?? null,
      incomplete: report.incomplete,
    },
  }),
);
