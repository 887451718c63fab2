"""Who may join the queue: one visitor never fills it for the others, and look-ups stay answerable while every
analysis slot is taken.

Gradio's queue has one `max_size` for every event of every visitor: a client that sent 90 analyses at once filled
it, and another visitor's `/model_info` look-up got "Queue is full". `fair_admission(page)` wraps the queue's
`push` (the one door every event goes through, the page's and API clients' alike) and refuses, before anything
is queued or computed:
- a request whose session id is empty (a client could never read its answer); one with no session id at all (the
  cURL call of Gradio's API page, `POST /gradio_api/call/<name>`) is a visitor of its own: Gradio gives it its
  event's id as its session;
- a request whose arguments are not what its event takes (`arguments`: kinds, ranges, choices, count; trailing
  arguments left out take the handler's defaults);
- a request of a visitor (a session: the page, or one API client) who already has `MAX_WAITING_PER_VISITOR`
  requests waiting: a visitor's requests queue behind each other, not in front of everyone;
- a request for a pool (`concurrency_id`: analyses, look-ups, builds, ...) that already has `MAX_WAITING_PER_POOL`
  requests waiting: a flood of analyses (from many sessions at once) leaves room for look-ups, whose pool is
  another.
The session id is the client's own choice; one who changes it with every request still meets the pool's bound,
so look-ups stay answerable and the total waiting stays at most (pools x `MAX_WAITING_PER_POOL`). The refusal is
Gradio's own "queue full" answer (HTTP 503) with a message that says why and what to do.
"""
from __future__ import annotations

import functools

import gradio as gr

from ..limits import MAX_WAITING_PER_POOL, MAX_WAITING_PER_VISITOR
from . import upstream
from .arguments import refused_arguments, with_defaults


def waiting(queue) -> tuple[dict[str, int], dict[str, int]]:
    """(requests waiting per visitor's session id, requests waiting per pool) in Gradio's `queue`."""
    per_visitor: dict[str, int] = {}
    per_pool: dict[str, int] = {}
    for pool, events in queue.event_queue_per_concurrency_id.items():
        per_pool[pool] = len(events.queue)
        for event in events.queue:
            per_visitor[event.session_hash] = per_visitor.get(event.session_hash, 0) + 1
    return per_visitor, per_pool


def refusal(queue, session: str | None, pool: str | None) -> str | None:
    """Why a request of `session` for `pool` may not join `queue` now, or None when it may."""
    if session is not None and not session:  # Gradio itself fails on an empty one (HTTP 500)
        return ("The request's session id is empty; send the one your client made (session_hash), or none at all "
                "(then the answer comes by the event's id).")
    per_visitor, per_pool = waiting(queue)
    # no session id: a visitor of its own, whose session Gradio names after the event (nothing of theirs waits yet)
    if session is not None and per_visitor.get(session, 0) >= MAX_WAITING_PER_VISITOR:
        return (f"You have {MAX_WAITING_PER_VISITOR} requests waiting already; this one was not queued. Wait for "
                "their answers, then send it again.")
    if pool is not None and per_pool.get(pool, 0) >= MAX_WAITING_PER_POOL:
        return (f"The app is busy: {MAX_WAITING_PER_POOL} requests of this kind are waiting. Try again in a "
                "moment.")
    return None


def own_components(page: gr.Blocks, session: str | None) -> dict:
    """The components as `session` has them (the choices its events gave them), by id; {} for a new visitor. Read
    only: no session state is made for a request that may be refused."""
    holder = getattr(page, "state_holder", None)
    state = holder.session_data.get(session) if holder is not None and session else None
    return state.blocks_config.blocks if state is not None else {}


def fair_admission(page: gr.Blocks) -> None:
    """Put the admission rules above in front of `page`'s queue (call after `page.queue(...)`)."""
    queue = page._queue
    push = queue.push

    @functools.wraps(push)
    async def admitted_push(body, request, username):
        try:
            block_fn = page.fns[body.fn_index] if body.fn_index is not None else None
        except (KeyError, TypeError):  # not an event of this page: Gradio's push says so
            block_fn = None
        own = own_components(page, body.session_hash)
        body.data = with_defaults(block_fn, body.data)
        refused = refused_arguments(block_fn, body.data, own) if block_fn is not None else None
        if refused is not None:
            return False, refused.detail(len(block_fn.inputs)), "validator_error"  # HTTP 422, with the message
        reason = refusal(queue, body.session_hash, getattr(block_fn, "concurrency_id", None))
        if reason is not None:
            return False, reason, "queue_full"
        return await push(body, request, username)

    queue.push = admitted_push


def http_errors(page: gr.Blocks) -> dict:
    """FastAPI exception handlers (for `launch(app_kwargs={"exception_handlers": ...})`) that answer a client's
    mistakes before the queue with a status and a message, where Gradio answered HTTP 500 with no message (and a
    traceback in the log): an endpoint that does not exist (or is not listed: `upstream.listed_events_only`), a
    body that is not what the route takes (`NaN` as the data, a missing field), an address too long for Gradio to
    read (`upstream.unreadable_address`). (A body nested too deeply: FastAPI's routes answer it 400 themselves;
    the MCP route, `ReadableMcpBodies`.)"""
    import httpx
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from gradio.route_utils import FnIndexInferError

    def unknown_endpoint(request, error) -> JSONResponse:
        names = sorted(f"/{fn.api_name}" for fn in page.fns.values()
                       if fn.api_name and getattr(fn, "api_visibility", "public") == "public")
        asked = request.path_params.get("api_name", "")
        what = f"No endpoint is named {str(asked)[:80]!r}" if asked else f"{str(error)[:80]} on this page"
        return JSONResponse({"detail": f"{what}. The endpoints: {', '.join(names)} (see /?view=api)."},
                            status_code=404)

    def malformed(request, error) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, problem.get('loc', ())))}: {problem.get('msg', '')}"
                             for problem in error.errors()[:5])
        return JSONResponse({"detail": f"The request's body is not what this route takes ({problems[:500]}). Send "
                                       "JSON: {\"data\": [one value per argument]}."}, status_code=422)

    return {FnIndexInferError: unknown_endpoint, RequestValidationError: malformed,
            httpx.InvalidURL: upstream.unreadable_address}


class ReadableMcpBodies:
    """ASGI middleware: an MCP message (a POST under `/gradio_api/mcp`) that JSON cannot read for its nesting (a body
    nested 100,000 deep: the MCP library catches only `json.JSONDecodeError`, so `RecursionError` became its HTTP 500)
    is answered HTTP 400 with a message before the MCP server sees it; any other body reaches it as it came."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or "/gradio_api/mcp" not in scope["path"]:
            return await self.app(scope, receive, send)
        import json

        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            json.loads(body)
        except RecursionError:
            detail = json.dumps({"detail": "The request's body is nested too deeply to read; send an MCP message "
                                           "as plain JSON."}).encode()
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(detail)).encode())]})
            await send({"type": "http.response.body", "body": detail})
            return
        except ValueError:
            pass  # not JSON: the MCP server says so itself

        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
