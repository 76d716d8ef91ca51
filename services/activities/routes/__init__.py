"""The activities service's routes, one module per resource; thin: parse, call, return."""

from services.activities.routes import (
    activities,
    funds,
    help,
    hours,
    points,
    programs,
    talks,
    training,
)

ROUTERS = [
    activities.router,
    talks.router,
    hours.router,
    programs.router,
    points.router,
    help.router,
    funds.router,
    training.router,
]
