"""The event backbone: services publish domain events through an outbox table in their own
schema (`outbox`), consumers in other services apply them to read models of their own
(`consumer`, `projection`), directly from the outbox tables or through NATS JetStream when
`NATS_URL` is set (`jetstream`), started with each app (`runtime`).

A service's `outbox` table is its published interface: the one cross-schema read allowed
(`SELECT` on `<schema>.outbox`, nothing else of that schema)."""
