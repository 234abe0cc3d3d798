"""``python -m services.bridge``: answers broadcasts for HTTP-only nodes (optional)."""

from services.bridge.worker import BridgeWorker
from shared.service import run
from shared.settings import BridgeSettings

if __name__ == "__main__":
    settings = BridgeSettings()
    run(BridgeWorker(settings), "bridge", settings)
