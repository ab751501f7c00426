# The operator image: `docker build -t ghcr.io/parachute-dev/parachute:0.1.0 .`
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir . && useradd --uid 10001 --no-create-home parachute
USER 10001
ENTRYPOINT ["parachute"]
CMD ["run"]
