"""Talking to the Hub: transient failures retried with backoff, every other one explained in one line.

A 5xx, 408/429 or a dropped connection is retried (MYTHOS_PUSH_ATTEMPTS times, the delay doubling
from MYTHOS_PUSH_BACKOFF seconds); a 401, 403, 404 or anything else becomes a MythosError that says
what to do.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

from mythos_convert.errors import MythosError
from mythos_convert.hub.files import PushPlan

T = TypeVar("T")

DEFAULT_ATTEMPTS = 4
DEFAULT_BACKOFF = 2.0  # seconds before the 2nd attempt; doubles each time


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _is_network_error(exc: BaseException) -> bool:
    """A transport failure (refused, reset, dropped, timed out), whatever HTTP library raised it."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    transport = {"TransportError", "NetworkError", "RemoteProtocolError", "TimeoutException", "ConnectError"}
    return bool(names & transport) or isinstance(exc, (ConnectionError, TimeoutError))


def _transient(exc: BaseException) -> bool:
    status = _status(exc)
    return _is_network_error(exc) or (status is not None and (status >= 500 or status in (408, 429)))


def explain(exc: BaseException, plan: PushPlan, what: str, attempts: int) -> MythosError:
    """The one-line, actionable message for a failure talking to the Hub."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    status, where = _status(exc), f"{plan.endpoint}/{plan.repo_id}"
    if _is_network_error(exc):
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        return MythosError(
            f"network failure while trying to {what} at {plan.endpoint} ({reason}), {attempts} attempt(s): "
            "check your connection, proxy settings and --endpoint / HF_ENDPOINT, then retry"
        )
    if status == 401:
        return MythosError(
            f"the Hub at {plan.endpoint} rejected the token (401 Unauthorized): pass a valid write token with "
            "--token, set HF_TOKEN or run `hf auth login`"
        )
    if status == 403:
        return MythosError(
            f"the token has no write access to {plan.repo_id} (403 Forbidden): use a token with write permission "
            "for that namespace (https://huggingface.co/settings/tokens) or push to your own namespace"
        )
    if isinstance(exc, RevisionNotFoundError):
        return MythosError(f"revision {plan.revision!r} not found in {where} (404): check --revision")
    if isinstance(exc, RepositoryNotFoundError) or status == 404:
        return MythosError(
            f"repository {plan.repo_id} not found at {plan.endpoint} (404) while trying to {what}: "
            "check --repo and that the token can see it"
        )
    if status is not None:
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        tries = f" after {attempts} attempt(s)" if _transient(exc) else ""
        return MythosError(f"the Hub answered {status} while trying to {what}{tries} ({detail}): retry later")
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else repr(exc)
    return MythosError(f"could not {what} at {where}: {detail}; check --endpoint and --repo, then retry")


def with_retries(fn: Callable[[], T], plan: PushPlan, what: str, attempts: int, backoff: float) -> T:
    """Run `fn`, retrying transient failures with exponential backoff; other failures raise at once."""
    from mythos_convert.support.ui import warn

    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except MythosError:
            raise
        except Exception as exc:
            if not _transient(exc) or attempt == attempts:
                raise explain(exc, plan, what, attempt) from exc
            delay = backoff * 2 ** (attempt - 1)
            warn(f"could not {what} (attempt {attempt}/{attempts}: {type(exc).__name__}); retrying in {delay:.1f} s")
            time.sleep(delay)
    raise AssertionError("unreachable")


def retry_settings(attempts: int | None, backoff: float | None) -> tuple[int, float]:
    """Attempts and base delay: arguments, else MYTHOS_PUSH_ATTEMPTS / MYTHOS_PUSH_BACKOFF, else defaults."""
    try:
        attempts = attempts if attempts is not None else int(os.environ.get("MYTHOS_PUSH_ATTEMPTS", DEFAULT_ATTEMPTS))
        backoff = backoff if backoff is not None else float(os.environ.get("MYTHOS_PUSH_BACKOFF", DEFAULT_BACKOFF))
    except ValueError as exc:
        raise MythosError(
            "MYTHOS_PUSH_ATTEMPTS must be an integer and MYTHOS_PUSH_BACKOFF a number: fix or unset them"
        ) from exc
    return max(1, attempts), max(0.0, backoff)
