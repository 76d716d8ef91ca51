"""The activities service: organizational life, talks, service hours, points, funds."""
