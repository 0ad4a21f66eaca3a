"""The dashboard's routes (Starlette). Every registry read opens the registry read-only for the
request (so a registry that disappears gives a 503 page and the next request tries again);
every value from a request reaches SQL as a bound parameter (``ufarsap_registry.queries``); run
files are read only through ``runs.run_dir``. Changes (activate, retire) need the write token the
server was started with and the CSRF token of the browser's cookie; without a write token the
dashboard is read-only.
"""

from __future__ import annotations

import hmac
import json
import math
import secrets
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from ufarsap_engine.dashboard import runs as run_files
from ufarsap_engine.dashboard.plots import line_svg

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
CSRF_COOKIE = "ufarsap_csrf"
PER_PAGE = 50
MAX_PER_PAGE = 500
STATES = ("candidate", "running", "complete", "failed")
LIFECYCLES = ("proposed", "active", "retired", "rejected")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


TEMPLATES.env.filters["fmt"] = _fmt


class BadRequest(HTTPException):
    def __init__(self, detail: str):
        super().__init__(400, detail)


def _int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"'{name}' must be a whole number, got {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise BadRequest(f"'{name}' must be between {lo} and {hi}, got {value}")
    return value


def _float(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"'{name}' must be a number, got {raw[:40]!r}") from None
    if not math.isfinite(value):
        raise BadRequest(f"'{name}' must be a finite number, got {raw[:40]!r}")
    return value


def _choice(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    raw = request.query_params.get(name) or None
    if raw is not None and raw not in allowed:
        raise BadRequest(f"'{name}' must be one of {', '.join(allowed)}, got {raw[:40]!r}")
    return raw


def _text(request: Request, name: str, max_len: int = 200) -> str | None:
    raw = request.query_params.get(name) or None
    if raw is not None and len(raw) > max_len:
        raise BadRequest(f"'{name}' is longer than {max_len} characters")
    return raw


def create_app(registry_url: str, runs_dir: str | Path | None = None, write_token: str | None = None) -> Starlette:
    """The dashboard over the registry at ``registry_url`` and the run directories in ``runs_dir``."""
    from ufarsap_registry import (InvalidArgument, InvalidTransition, RegistryError, StrategyNotFound,
                                  open_registry)

    runs_root = Path(runs_dir).resolve() if runs_dir else None

    @contextmanager
    def registry(write: bool = False):
        reg = open_registry(registry_url, create=False, read_only=not write)
        try:
            yield reg
        finally:
            reg.close()

    def page(request: Request, template: str, status_code: int = 200, **context) -> Response:
        token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        context = {"writable": write_token is not None, "csrf": token, "location": _location(registry_url),
                   "runs_root": str(runs_root) if runs_root else None, **context}
        response = TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)
        if CSRF_COOKIE not in request.cookies:
            response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict")
        return response

    def error_page(request: Request, status: int, title: str, detail: str) -> Response:
        if request.url.path.endswith(".json"):
            return JSONResponse({"error": title, "detail": detail}, status_code=status)
        return page(request, "error.html", status_code=status, title=title, detail=detail, status=status)

    # -- pages --------------------------------------------------------------------------------
    def home(request: Request) -> Response:
        return RedirectResponse("/strategies", status_code=302)

    def strategies(request: Request) -> Response:
        filters = dict(state=_choice(request, "state", STATES), lifecycle=_choice(request, "lifecycle", LIFECYCLES),
                       plugin=_text(request, "plugin"), scope=_text(request, "scope", 64),
                       metric=_text(request, "metric"), min_value=_float(request, "min"),
                       max_value=_float(request, "max"))
        order = _choice(request, "order", ("asc", "desc")) or "desc"
        if filters["metric"] is None and (filters["min_value"], filters["max_value"]) != (None, None):
            raise BadRequest("'min' and 'max' need a 'metric' to filter on")
        per_page = _int(request, "per_page", PER_PAGE, 1, MAX_PER_PAGE)
        page_no = _int(request, "page", 1, 1, 10**9)
        with registry() as reg:
            total = reg.count(**filters)
            rows = reg.list(**filters, order=order, limit=per_page, offset=(page_no - 1) * per_page)
            metrics = reg.metric_names()
        pages = max(1, math.ceil(total / per_page))
        query = {k: v for k, v in request.query_params.items() if k != "page"}
        return page(request, "strategies.html", rows=rows, total=total, page_no=page_no, pages=pages,
                    per_page=per_page, metric=filters["metric"], metrics=metrics, order=order,
                    filters=filters, query=query, states=STATES, lifecycles=LIFECYCLES)

    def strategy(request: Request) -> Response:
        sid = _path_id(request)
        with registry() as reg:
            rec = reg.get(sid)
            history = reg.score_history(sid)
            ancestry = reg.ancestry(sid)
            descendants = reg.descendants(sid)
            events = reg.lineage(sid)
        multi = {k: v for k, v in history.items() if len(v) > 1}
        plot = line_svg(multi, f"strategy {sid}: scores over steps") if multi else ""
        children: dict[int, list] = {}
        for d in descendants:
            children.setdefault(d.parent_id, []).append(d)
        return page(request, "strategy.html", rec=rec, history=history, plot=plot, ancestry=ancestry,
                    children=children, events=events, params=json.dumps(rec.params, indent=2, default=str),
                    done=_choice(request, "done", ("activated", "retired")))

    async def change(request: Request) -> Response:
        sid = _path_id(request)
        action = request.path_params["action"]
        if action not in ("activate", "retire"):
            raise HTTPException(404, f"no action {action[:40]!r}: activate or retire")
        if write_token is None:
            raise HTTPException(403, "this dashboard is read-only: start it with --write-token to activate or retire")
        form = await request.form()
        cookie, sent = request.cookies.get(CSRF_COOKIE, ""), str(form.get("csrf", ""))
        if not cookie or not hmac.compare_digest(cookie, sent):
            raise HTTPException(403, "the form's CSRF token does not match this browser's: reload the page and retry")
        if not hmac.compare_digest(str(form.get("token", "")).encode(), write_token.encode()):
            raise HTTPException(403, "wrong write token")
        reason = f"from the dashboard ({request.client.host if request.client else 'unknown'})"
        with registry(write=True) as reg:
            if action == "activate":
                reg.activate(sid, reason=reason)
            else:
                reg.retire(sid, reason=reason)
        return RedirectResponse(f"/strategies/{sid}?done={action}d", status_code=303)

    def runs_page(request: Request) -> Response:
        return page(request, "runs.html", runs=run_files.list_runs(runs_root))

    def run_page(request: Request) -> Response:
        root = _runs_root(runs_root)
        name = request.path_params["name"]
        info = run_files.run_info(root, name)
        rows = run_files.read_metrics(run_files.run_dir(root, name))
        loss = run_files.curves(rows, ("loss", "lm_loss", "lm_loss_kept"))
        align = run_files.curves(rows, ("align", "flagged_p", "reward.unified"))
        return page(request, "run.html", info=info, rows=len(rows), last=rows[-1] if rows else {},
                    loss_plot=line_svg({k: loss[k] for k in ("loss", "lm_loss", "lm_loss_kept") if k in loss},
                                       f"{name}: losses"),
                    align_plot=line_svg(align, f"{name}: alignment"), refresh=info.status == "running")

    def run_metrics(request: Request) -> Response:
        root = _runs_root(runs_root)
        since = _int(request, "since", 0, 0, 10**12)
        rows = run_files.read_metrics(run_files.run_dir(root, request.path_params["name"]))
        return JSONResponse({"metrics": [r for r in rows if r["step"] > since]})

    def evolution(request: Request) -> Response:
        from ufarsap_engine.evolution.report import report

        scope = _text(request, "scope", 64) or "default"
        with registry() as reg:
            data = report(reg, None, out_png=None, scope=scope)
        rounds = data["per_round"]
        plot = line_svg({"best objective": [(r["round"], r["best_objective"]) for r in rounds
                                            if r["best_objective"] is not None]},
                        f"evolution of scope '{scope}'", xlabel="round") if rounds else ""
        return page(request, "evolution.html", data=data, scope=scope, plot=plot)

    def plugins(request: Request) -> Response:
        from ufarsap_engine.catalog import plugin_catalog

        return page(request, "plugins.html", rows=plugin_catalog(registry_url))

    # -- errors -------------------------------------------------------------------------------
    async def http_error(request: Request, exc: HTTPException) -> Response:
        titles = {400: "bad request", 403: "forbidden", 404: "not found", 405: "method not allowed"}
        return error_page(request, exc.status_code, titles.get(exc.status_code, "error"), str(exc.detail))

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_page(request, 404, "not found", str(exc))

    async def run_not_found(request: Request, exc: Exception) -> Response:
        return error_page(request, 404, "not found", f"no run named {str(exc)[:80]!r} under the runs folder")

    async def bad_argument(request: Request, exc: Exception) -> Response:
        return error_page(request, 400, "bad request", str(exc))

    async def conflict(request: Request, exc: Exception) -> Response:
        return error_page(request, 409, "not allowed", str(exc))

    async def unavailable(request: Request, exc: Exception) -> Response:
        return error_page(request, 503, "registry unavailable",
                          f"{exc} (the dashboard keeps serving; reload when the registry is back)")

    async def server_error(request: Request, exc: Exception) -> Response:
        return error_page(request, 500, "server error", f"{type(exc).__name__}: {exc}")

    async def timing(request: Request, call_next):
        """Server time of each response, for benchmarks and browsers' dev tools."""
        t0 = time.perf_counter()
        response = await call_next(request)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - t0) * 1000:.1f}"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        return response

    app = Starlette(routes=[
        Route("/", home),
        Route("/strategies", strategies),
        Route("/strategies/{sid}", strategy),
        Route("/strategies/{sid}/{action:str}", change, methods=["POST"]),
        Route("/runs", runs_page),
        Route("/runs/{name}", run_page),
        Route("/runs/{name}/metrics.json", run_metrics),
        Route("/evolution", evolution),
        Route("/plugins", plugins),
    ], exception_handlers={
        HTTPException: http_error, StrategyNotFound: not_found, run_files.RunNotFound: run_not_found,
        InvalidArgument: bad_argument, InvalidTransition: conflict, RegistryError: unavailable,
        Exception: server_error,
    }, middleware=[Middleware(BaseHTTPMiddleware, dispatch=timing)])
    return app


def _path_id(request: Request) -> int:
    raw = request.path_params["sid"]
    if not raw.isdigit() or len(raw) > 18:
        raise HTTPException(404, f"no strategy with id {raw[:40]!r}")
    return int(raw)


def _runs_root(root: Path | None) -> Path:
    if root is None:
        raise HTTPException(404, "no runs folder: start the dashboard with --runs DIR")
    return root


def _location(url: str) -> str:
    from ufarsap_registry import redact

    return redact(url)
