"""``python -m services.registry``: the registry worker."""

from services.registry.worker import RegistryWorker
from shared.service import run
from shared.settings import RegistrySettings

if __name__ == "__main__":
    settings = RegistrySettings()
    run(RegistryWorker(settings), "registry", settings)
