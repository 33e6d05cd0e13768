#!/usr/bin/env bash
# Make sure PostgreSQL, Redis and RabbitMQ answer on their local ports; start any that does not.
# Used by `make test` and CI. Safe to run when everything is already up.
set -uo pipefail

answers() { timeout 2 bash -c "</dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_for() {  # name port seconds
  for _ in $(seq 1 "$3"); do answers "$2" && return 0; sleep 1; done
  echo "ensure-services: $1 does not answer on port $2" >&2
  return 1
}

if ! answers 5432; then
  echo "ensure-services: starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
  fi
  wait_for PostgreSQL 5432 60 || exit 1
fi
if command -v pg_isready >/dev/null; then
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi

if ! answers 6379; then
  echo "ensure-services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  wait_for Redis 6379 30 || exit 1
fi

if ! answers 5672; then
  echo "ensure-services: starting RabbitMQ"
  rabbitmq-server -detached || true
  wait_for RabbitMQ 5672 120 || exit 1
fi
echo "ensure-services: PostgreSQL, Redis and RabbitMQ answer"
