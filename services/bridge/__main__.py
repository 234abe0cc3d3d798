"""``python -m services.bridge``: answers broadcasts for HTTP-only nodes (optional)."""

import logging

from services.bridge.worker import BridgeWorker
from shared.service import run
from shared.settings import BridgeSettings

if __name__ == "__main__":
    # httpx logs every request at INFO: one line per node per search is too many.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = BridgeSettings()
    run(BridgeWorker(settings), "bridge", settings)
