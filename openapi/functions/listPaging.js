// A 2xx response whose schema has `items` and `next_cursor` needs ?limit= and ?cursor=.
function properties(schema) {
  if (!schema || typeof schema !== "object") return {};
  let out = {};
  for (const key of ["allOf", "anyOf", "oneOf"]) {
    for (const sub of schema[key] || []) out = { ...out, ...properties(sub) };
  }
  return { ...out, ...(schema.properties || {}) };
}

export default function listPaging(operation, _options, context) {
  const params = new Set(
    (operation.parameters || []).filter((p) => p && p.in === "query").map((p) => p.name),
  );
  const results = [];
  for (const [status, response] of Object.entries(operation.responses || {})) {
    if (!status.startsWith("2")) continue;
    for (const media of Object.values((response && response.content) || {})) {
      const props = properties(media.schema);
      if (!("items" in props && "next_cursor" in props)) continue;
      for (const name of ["limit", "cursor"]) {
        if (!params.has(name)) {
          results.push({ message: `a list without ?${name}=`, path: [...context.path, "parameters"] });
        }
      }
    }
  }
  return results;
}
