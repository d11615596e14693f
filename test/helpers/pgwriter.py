# An application writing to a Patroni cluster: one INSERT per statement
# (autocommit, so an answer is an acknowledged commit), sequential ids, a
# client-side timeout on every step (a backend waiting on a hung disk never
# answers, and a server-side statement_timeout cannot interrupt it), and a
# reconnect after any error. It finds the primary as HAProxy's Patroni check
# does (--route=patroni: the first node whose REST API answers GET /primary
# with 200) or as libpq's target_session_attrs=read-write does
# (--route=libpq: the first node, in order, whose session is read-write).
# One JSON line per event, flushed, to the --out file:
#   {"ev":"connected","node":"pg1","t":...}
#   {"ev":"ack","id":N,"node":"pg1","t":...}   row N's commit acknowledged by pg1
#   {"ev":"error","op":"route"|"connect"|"query","kind":"timeout"|"reset"|"refused"|"readonly"|"other",
#    "msg":"...","id":N,"node":"pg1","t":...}
# Runs with /usr/bin/python3 and Debian's psycopg2.
import argparse
import json
import select
import signal
import sys
import time
import urllib.request

import psycopg2
import psycopg2.extensions

parser = argparse.ArgumentParser()
parser.add_argument('--node', action='append', required=True, help='NAME=IP, in the order tried')
parser.add_argument('--port', type=int, default=5432)
parser.add_argument('--api-port', type=int, default=8008)
parser.add_argument('--password', required=True)
parser.add_argument('--first-id', type=int, default=1)
parser.add_argument('--timeout', type=float, default=3.0, help='seconds for one connect or one statement')
parser.add_argument('--pause', type=float, default=0.01, help='seconds between two inserts')
parser.add_argument('--route', choices=['patroni', 'libpq'], default='patroni')
parser.add_argument('--out', required=True)
args = parser.parse_args()

nodes = [tuple(n.split('=', 1)) for n in args.node]
out = open(args.out, 'a', buffering=1)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def say(event):
    event['t'] = int(time.time() * 1000)
    out.write(json.dumps(event) + '\n')


class Timeout(Exception):
    pass


def wait(conn, deadline):
    """Drives an asynchronous connection until it is ready, or raises Timeout at the deadline."""
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout()
        if state == psycopg2.extensions.POLL_READ:
            select.select([conn.fileno()], [], [], left)
        elif state == psycopg2.extensions.POLL_WRITE:
            select.select([], [conn.fileno()], [], left)


def kind_of(error):
    if isinstance(error, Timeout):
        return 'timeout'
    text = str(error)
    if 'read-only' in text or 'recovery' in text:
        return 'readonly'
    if 'refused' in text:
        return 'refused'
    if 'closed the connection' in text or 'reset' in text or 'terminat' in text or 'EOF' in text or 'shut' in text:
        return 'reset'
    return 'other'


def open_conn(ip):
    conn = psycopg2.connect(host=ip, port=args.port, user='postgres', password=args.password, dbname='postgres',
                            application_name='writer', async_=1)
    try:
        wait(conn, time.monotonic() + args.timeout)
    except BaseException:
        conn.close()
        raise
    return conn


def run(conn, sql, params=None):
    cur = conn.cursor()
    cur.execute(sql, params)
    wait(conn, time.monotonic() + args.timeout)
    return cur.fetchall() if cur.description is not None else None


def primary_by_patroni():
    for name, ip in nodes:
        try:
            with urllib.request.urlopen(f'http://{ip}:{args.api_port}/primary', timeout=min(1.0, args.timeout)) as r:
                if r.status == 200:
                    return name, ip
        except Exception:
            pass
    return None


def connect():
    """The primary as the route sees it, connected; None when there is none (an error was said)."""
    if args.route == 'patroni':
        found = primary_by_patroni()
        if found is None:
            say({'ev': 'error', 'op': 'route', 'kind': 'other', 'msg': 'no node answers /primary with 200'})
            return None
        candidates = [found]
    else:
        candidates = nodes
    for name, ip in candidates:
        try:
            conn = open_conn(ip)
        except Exception as error:
            say({'ev': 'error', 'op': 'connect', 'kind': kind_of(error), 'msg': str(error).strip()[:200], 'node': name})
            continue
        if args.route == 'libpq':
            try:
                if run(conn, 'SHOW transaction_read_only')[0][0] != 'off':
                    conn.close()
                    continue
            except Exception as error:
                conn.close()
                say({'ev': 'error', 'op': 'connect', 'kind': kind_of(error), 'msg': str(error).strip()[:200], 'node': name})
                continue
        say({'ev': 'connected', 'node': name})
        return name, conn
    return None


next_id = args.first_id
current = None
while True:
    if current is None:
        current = connect()
        if current is None:
            time.sleep(0.1)
            continue
    name, conn = current
    row = next_id
    next_id += 1
    try:
        run(conn, 'INSERT INTO t (id) VALUES (%s)', (row,))
        say({'ev': 'ack', 'id': row, 'node': name})
    except Exception as error:
        # The row is in doubt (it may still commit later); its id is never reused.
        say({'ev': 'error', 'op': 'query', 'kind': kind_of(error), 'msg': str(error).strip()[:200], 'id': row, 'node': name})
        conn.close()
        current = None
        time.sleep(0.1)
        continue
    if args.pause > 0:
        time.sleep(args.pause)
