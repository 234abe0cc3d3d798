"""``python -m services.api``: the HTTP API, served by uvicorn."""

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.api.app import create_app
from shared.logs import setup_logging
from shared.settings import ApiSettings


class JsonErrorsHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request it cannot parse with a JSON body.

    Such a request (a malformed Content-Length or header, a bad chunk, an unknown
    method) never reaches the app, and uvicorn answers it itself in plain text; the
    API answers every error as JSON ``{"message": ...}``.
    """

    def send_400_response(self, msg: str) -> None:
        body = orjson.dumps({"message": "Invalid HTTP request."})
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/json\r\n",
                 b"content-length: %d\r\n" % len(body),
                 b"connection: close\r\n\r\n"]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


if __name__ == "__main__":
    settings = ApiSettings()
    setup_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        loop="uvloop",
        http=JsonErrorsHttpToolsProtocol,
        log_config=None,
        access_log=False,
        # On SIGTERM uvicorn stops accepting, then drains in-flight requests.
        timeout_graceful_shutdown=10,
    )
