#!/bin/sh
# Write what the official image's environment variables ask for, then start the node.
set -eu
if [ -n "${RABBITMQ_ERLANG_COOKIE:-}" ]; then
  rm -f "$HOME/.erlang.cookie"
  printf '%s' "$RABBITMQ_ERLANG_COOKIE" >"$HOME/.erlang.cookie"
  chmod 400 "$HOME/.erlang.cookie"
fi
# Debian's 3.10 reads one file: the defaults first, then every mounted conf.d file.
{
  echo "loopback_users = none"
  echo "default_user = ${RABBITMQ_DEFAULT_USER:-guest}"
  echo "default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}"
  cat /etc/rabbitmq/conf.d/*.conf 2>/dev/null || true
} >/etc/rabbitmq/rabbitmq.conf
exec "$@"
