#!/bin/bash
# Is a fenced Patroni node safe to let back in? Asked of the node itself, in
# its own network namespace: its REST API and its PostgreSQL over the local
# socket (both pass a fence, which spares loopback). Exit codes:
#   0   it rejoined as a replica: GET /replica is 200 and its WAL receiver is
#       streaming (from SENDER, printed): clients may come back;
#   10  it demoted itself: GET /primary is not 200 and PostgreSQL is in
#       recovery: it may reach etcd again (to learn the new leader, rewind, stream);
#   1   neither yet (still primary, or not answering: a hung disk).
# Usage: patroni-rejoin.sh API_URL SOCKET_DIR PORT
set -u
api=$1 socket=$2 port=$3
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$api$1"; }
sql() { timeout 3 psql -X -A -t -q -h "$socket" -p "$port" -U postgres -d postgres -c "$1" 2>/dev/null; }

primary=$(code /primary)
replica=$(code /replica)
recovery=$(sql 'select pg_is_in_recovery()')
receiver=$(sql "select status || ' from ' || coalesce(sender_host, '?') from pg_stat_wal_receiver")
echo "primary=$primary replica=$replica recovery=${recovery:-?} receiver=${receiver:-none}"
if [ "$replica" = 200 ] && [ "$recovery" = t ] && [[ $receiver == streaming* ]]; then
  exit 0
fi
if [ "$primary" != 200 ] && [ "$recovery" = t ]; then
  exit 10
fi
exit 1
