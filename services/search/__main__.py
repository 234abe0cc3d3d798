"""``python -m services.search``: the scatter-gather search worker."""

from services.search.worker import SearchWorker
from shared.service import run
from shared.settings import SearchSettings

if __name__ == "__main__":
    settings = SearchSettings()
    run(SearchWorker(settings), "search", settings)
