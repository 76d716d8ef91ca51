// Sensitive properties and the only operations whose responses may carry them
// (the same list as tests/contract/lint.py).
const ALLOWED = {
  id_number: ["get /api/v1/registry/members/{member_id}/id-number"],
  notes: [
    "get /api/v1/activities/talks/{talk_id}",
    "get /api/v1/mobility/mobile-members",
    "post /api/v1/mobility/mobile-members",
    "get /api/v1/mobility/mobile-members/{card_id}",
    "post /api/v1/mobility/mobile-members/{card_id}/contacts",
    "post /api/v1/mobility/mobile-members/{card_id}/return",
  ],
};

function names(node, seen, out) {
  if (!node || typeof node !== "object" || seen.has(node)) return out;
  seen.add(node);
  if (Array.isArray(node)) {
    for (const v of node) names(v, seen, out);
    return out;
  }
  if (node.properties && typeof node.properties === "object") {
    for (const k of Object.keys(node.properties)) out.add(k);
  }
  for (const v of Object.values(node)) names(v, seen, out);
  return out;
}

export default function sensitiveFields(operation, _options, context) {
  const [, path, method] = context.path;
  const results = [];
  for (const [status, response] of Object.entries(operation.responses || {})) {
    if (!status.startsWith("2")) continue;
    const found = names((response && response.content) || {}, new Set(), new Set());
    for (const [field, allowed] of Object.entries(ALLOWED)) {
      if (found.has(field) && !allowed.includes(`${method} ${path}`)) {
        results.push({ message: `${status} shows \`${field}\``, path: [...context.path, "responses", status] });
      }
    }
  }
  return results;
}
