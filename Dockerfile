# One image for every Python process of the gateway: the API (default), the
# registry and search workers, and the demo grid node. Pick one with the command:
#   python -m services.api | services.registry | services.search | services.node ...
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin grid

# The dependencies are the locked versions of the server extra (requirements-server.lock, with
# hashes: what the test suite ran with); then the project's own packages from pyproject.toml.
COPY pyproject.toml requirements-server.lock ./
RUN pip install --require-hashes -r requirements-server.lock
COPY shared/ shared/
COPY services/ services/
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info

COPY examples/ examples/
# The registry's default SQLite store lives under ./data (PostgreSQL in compose).
RUN mkdir -p data && chown grid:grid data

USER grid

# The API listens on every interface inside the container.
ENV GRID_API_HOST=0.0.0.0
EXPOSE 8000

CMD ["python", "-m", "services.api"]
