"""``python -m services.api``: the HTTP API, served by uvicorn."""

import uvicorn

from services.api.app import create_app
from shared.logs import setup_logging
from shared.settings import ApiSettings

if __name__ == "__main__":
    settings = ApiSettings()
    setup_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        # On SIGTERM uvicorn stops accepting, then drains in-flight requests.
        timeout_graceful_shutdown=10,
    )
