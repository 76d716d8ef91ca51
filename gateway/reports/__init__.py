"""The city report: `GET /api/v1/reports/orgs/{org_id}` composed from the services' own
statistics endpoints, as JSON, an xlsx workbook or a printable HTML page."""
