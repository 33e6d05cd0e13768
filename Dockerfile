# syntax=docker/dockerfile:1
# Multi-stage: build a wheel of the same package the tests install, then a slim, non-root runtime.

FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip build
COPY pyproject.toml setup.cfg README.md ./
COPY wallet ./wallet
RUN python -m build --wheel --outdir /dist

FROM python:3.11-slim AS runtime
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 wallet
COPY --from=build /dist/*.whl /tmp/
RUN pip install /tmp/*.whl && rm /tmp/*.whl
USER wallet
WORKDIR /home/wallet
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:3000/health/live', timeout=2).status == 200 else 1)"
ENTRYPOINT ["wallet"]
CMD ["serve"]
