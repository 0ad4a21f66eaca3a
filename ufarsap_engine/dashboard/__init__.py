"""``ufarsap-engine dashboard``: a small server-rendered web application (Starlette + Jinja2,
served by uvicorn) over a strategy registry and a folder of run directories.

Pages: strategies (filter, sort by any metric, paginated), a strategy (params, plugins, scores
over steps, lineage), runs (status, live curves from ``metrics.jsonl``), evolution rounds
(Table 2 figures), installed plugins. Safe by default: it binds to 127.0.0.1, reads the registry
read-only, and changes it (activate / retire) only when started with a write token, which each
change must carry together with a CSRF token. See ``app.py``.
"""

from ufarsap_engine.dashboard.app import create_app

__all__ = ["create_app"]
