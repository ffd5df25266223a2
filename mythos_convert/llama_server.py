"""`python -m mythos_convert.llama_server --model FILE.gguf ...`: llama-cpp-python's OpenAI server, AMX-safe.

It is `python -m llama_cpp.server` (same arguments, same app) with AMX taken out of llama.cpp's
extra buffer types (`llama_buffers.repacked_weights`). Why: on CPUs with AMX, llama.cpp moves
Q8_0/Q4_0/K-quant weights into its AMX buffer and that matmul crashes (llama.cpp issue 20824); the
stock server then dies with a segmentation fault on the first completion of a Q8_0 file (seen with
llama-cpp-python 0.3.36, and tested in tests/test_serve_llama_cpp.py). The server has no option for
it. Without AMX, llama.cpp's other extra buffer (CPU_REPACK) still takes what it repacks, as the
stock server does on a CPU without AMX: generation measured here 16% faster for Q4_0 and 14-21%
for Q4_K_M than in the plain buffer, Q8_0 and F16 unchanged. Where that cannot be had (no
CPU_REPACK, a ggml that does not answer), every weight goes in the plain buffer, as verify loads
them. On a CPU without AMX this is the stock server.

It also answers a client's mistakes as one: the stock server turns an unparseable body and a body
of the wrong shape into HTTP 500 (its error handler catches FastAPI's validation error as its own
failure, then fails again re-reading unparseable JSON); here they are 400 and 422, as FastAPI
answers them, with an OpenAI-style error naming the problem.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from typing import Any

from mythos_convert.errors import MythosError


def _client_errors_as_4xx() -> None:
    """Give llama-cpp-python's routes an error handler that answers client errors with 4xx.

    Runs before `llama_cpp.server.app` is imported: its routes take the route class at import.
    """
    from fastapi import Request, Response
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from llama_cpp.server import errors

    stock = errors.RouteErrorHandler

    def client_error(status: int, message: str, param: str | None = None) -> tuple[int, dict]:
        return status, {"message": message, "type": "invalid_request_error", "param": param, "code": None}

    class ClientErrorRoute(stock):  # type: ignore[misc, valid-type]
        def error_message_wrapper(self, error: Exception, body: Any = None) -> tuple[int, Any]:
            if isinstance(error, RequestValidationError):  # the body's shape: FastAPI's 422
                first = (error.errors() or [{}])[0]
                where = [str(part) for part in first.get("loc", ()) if part != "body"]
                param = ".".join(where) or None
                message = f"{param or 'the request body'}: {first.get('msg', 'invalid')}"
                return client_error(422, message, param)
            return super().error_message_wrapper(error, body)

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                try:
                    return await handler(request)
                except ValueError as exc:  # stock re-reads an unparseable body after FastAPI refused it
                    status, error = client_error(400, f"the request body is not valid JSON: {exc}")
                    return JSONResponse({"error": error}, status_code=status)

            return route

    errors.RouteErrorHandler = ClientErrorRoute


def main() -> None:
    """Run llama-cpp-python's server (its own argument parser reads sys.argv), never on AMX."""
    try:
        _client_errors_as_4xx()
        from llama_cpp.server.__main__ import main as server_main
    except ImportError as exc:
        raise MythosError(
            "the llama.cpp server needs llama-cpp-python's server extra: pip install 'llama-cpp-python[server]==0.3.36'"
        ) from exc
    from mythos_convert.engines.llama_buffers import repacked_weights

    with repacked_weights():  # for the server's whole life: it may load models after it starts
        server_main()


if __name__ == "__main__":
    try:
        main()
    except MythosError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
