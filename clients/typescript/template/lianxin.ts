/**
 * Lianxin's TypeScript client: `openapi-fetch` typed by `schema.d.ts`, which
 * `openapi-typescript` generates from the OpenAPI document (`make clients` writes both to
 * dist/typescript/). Every path, parameter, body and answer is checked by `tsc`.
 *
 *     const pair = await logIn(base, "admin", password);
 *     const api = lianxin(base, { token: pair.access_token });
 *     const { data, error } = await api.GET("/api/v1/registry/orgs", { params: { query: { limit: 50 } } });
 *
 * `error` is the RFC 9457 problem (`Schemas["Problem"]`) when the answer is not a 2xx.
 */
import createClient, { type Client, type Middleware } from "openapi-fetch";
import type { components, operations, paths } from "./schema.js";

export type { components, operations, paths };
export type Schemas = components["schemas"];
/** The JSON answers: a report's xlsx and HTML forms are left out of the types (ask for
 * them with `parseAs: "blob"` or `"text"`). */
export type Json = "application/json" | "application/problem+json";
export type LianxinClient = Client<paths, Json>;

/** An access token (people) or an org's API key (systems, e.g. a work unit's sync). */
export interface Credentials {
  token?: string;
  apiKey?: string;
}

/** A client of the gateway at `baseUrl` (e.g. `http://127.0.0.1:8000`). */
export function lianxin(baseUrl: string, credentials: Credentials = {}): LianxinClient {
  const client = createClient<paths, Json>({ baseUrl });
  const auth: Middleware = {
    onRequest({ request }) {
      if (credentials.token) request.headers.set("Authorization", `Bearer ${credentials.token}`);
      if (credentials.apiKey) request.headers.set("X-API-Key", credentials.apiKey);
      return request;
    },
  };
  client.use(auth);
  return client;
}

/** An `application/x-www-form-urlencoded` body (null and undefined fields left out). */
export function form(body: object): URLSearchParams {
  const fields = new URLSearchParams();
  for (const [name, value] of Object.entries(body)) {
    if (value !== null && value !== undefined) fields.set(name, String(value));
  }
  return fields;
}

/** `POST /api/v1/auth/token` (a form, not JSON): the token pair, or throws the problem. */
export async function logIn(
  baseUrl: string,
  username: string,
  password: string,
): Promise<Schemas["TokenPair"]> {
  const { data, error, response } = await lianxin(baseUrl).POST("/api/v1/auth/token", {
    body: { username, password },
    bodySerializer: form,
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
  });
  if (data === undefined) {
    throw new Error(`login failed (${response.status}): ${error?.detail ?? error?.title}`);
  }
  return data;
}

/** Every item of a keyset-paginated list: `page(cursor)` fetches one page
 * (`{items, next_cursor}`); pages are followed until `next_cursor` is null. */
export async function* everyItem<T>(
  page: (cursor: string | undefined) => Promise<{ items: T[]; next_cursor?: string | null }>,
): AsyncGenerator<T> {
  let cursor: string | undefined;
  do {
    const current = await page(cursor);
    yield* current.items;
    cursor = current.next_cursor ?? undefined;
  } while (cursor !== undefined);
}
