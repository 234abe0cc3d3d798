"""``python -m services.api``: the HTTP API, served by uvicorn (``GRID_API_WORKERS`` processes)."""

from services.api.server import serve
from shared.logs import setup_logging
from shared.settings import ApiSettings

if __name__ == "__main__":
    settings = ApiSettings()
    setup_logging(settings.log_level, settings.log_format)
    serve(settings)
