"""The coordinator's dashboard: a web page with the fleet, the job's accuracy against time beside
the planner's plan and prediction, and ROMA's SLA panel, updated live by server-sent events.

Needs ``aiohttp``; ``coordinator`` itself never imports this package. ::

    async with open_dashboard(host="127.0.0.1", port=8080, roma_url=None) as (dashboard, url):
        dashboard.watch(coordinator)      # before or after coordinator.run() starts
        await coordinator.run()

The page is plain HTML, CSS and JavaScript drawing inline SVG, shipped as package data
(``static/``); it loads nothing from elsewhere. ROMA, a separate process, is read over its HTTP
endpoints from the dashboard's server side (see :mod:`._roma`), so the page's only origin is the
dashboard. See ``docs/dashboard.md``.
"""

from ._server import Dashboard, open_dashboard
from ._snapshot import agent_rows, curve_points, job_snapshot

__all__ = ["Dashboard", "agent_rows", "curve_points", "job_snapshot", "open_dashboard"]
