# An application writing to one node of a Galera cluster: one INSERT per
# statement (autocommit, so an answer is an acknowledged commit), sequential
# ids, a client-side timeout on every connect, read and write (a commit that
# waits on flow control or on a hung disk never answers), and a reconnect to
# the same node after any error. One JSON line per event, flushed, to --out:
#   {"ev":"connected","node":"g1","t":...}
#   {"ev":"ack","id":N,"node":"g1","t":...}   row N's commit acknowledged by g1
#   {"ev":"error","op":"connect"|"query","kind":"timeout"|"reset"|"refused"|"other",
#    "code":MYSQL_ERRNO,"msg":"...","id":N,"node":"g1","t":...}
# Runs with /usr/bin/python3 and Debian's pymysql.
import argparse
import json
import signal
import sys
import time

import pymysql

parser = argparse.ArgumentParser()
parser.add_argument('--node', required=True, help='NAME=IP')
parser.add_argument('--port', type=int, default=3306)
parser.add_argument('--user', required=True)
parser.add_argument('--password', required=True)
parser.add_argument('--first-id', type=int, default=1)
parser.add_argument('--timeout', type=float, default=3.0, help='seconds for one connect, read or write')
parser.add_argument('--pause', type=float, default=0.01, help='seconds between two inserts')
parser.add_argument('--out', required=True)
args = parser.parse_args()

name, ip = args.node.split('=', 1)
out = open(args.out, 'a', buffering=1)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def say(event):
    event['t'] = int(time.time() * 1000)
    event['node'] = name
    out.write(json.dumps(event) + '\n')


def describe(error):
    """(kind, code, message) of an error: pymysql says 2013 "Lost connection" for both a timeout and a reset."""
    text = str(error)
    code = error.args[0] if isinstance(error, pymysql.err.MySQLError) and error.args and isinstance(error.args[0], int) else None
    low = text.lower()
    if 'timed out' in low:
        kind = 'timeout'
    elif 'refused' in low:
        kind = 'refused'
    elif 'reset' in low or 'broken pipe' in low or 'lost connection' in low or 'gone away' in low:
        kind = 'reset'
    else:
        kind = 'other'
    return kind, code, text.strip()[:200]


def connect():
    return pymysql.connect(host=ip, port=args.port, user=args.user, password=args.password, database='app',
                           autocommit=True, connect_timeout=args.timeout, read_timeout=args.timeout,
                           write_timeout=args.timeout)


next_id = args.first_id
conn = None
while True:
    if conn is None:
        try:
            conn = connect()
        except Exception as error:
            kind, code, msg = describe(error)
            say({'ev': 'error', 'op': 'connect', 'kind': kind, 'code': code, 'msg': msg})
            time.sleep(0.1)
            continue
        say({'ev': 'connected'})
    row = next_id
    next_id += 1
    try:
        with conn.cursor() as cur:
            cur.execute('INSERT INTO t (id) VALUES (%s)', (row,))
        say({'ev': 'ack', 'id': row})
    except Exception as error:
        # The row is in doubt (it may still commit later); its id is never reused.
        kind, code, msg = describe(error)
        say({'ev': 'error', 'op': 'query', 'kind': kind, 'code': code, 'msg': msg, 'id': row})
        try:
            conn.close()
        except Exception:
            pass
        conn = None
        time.sleep(0.1)
        continue
    if args.pause > 0:
        time.sleep(args.pause)
