# Watches a Patroni cluster from outside and writes what changes, one JSON
# line each, flushed, to the --out file:
#   {"src":"etcd","leader":"pg1"|null,"t":...}            the leader key's value (null: no key)
#   {"src":"etcd","error":"...","t":...}                  etcd did not answer
#   {"src":"pg1","role":"primary"|"replica"|...,"state":"running",...,"t":...}   GET /patroni
#   {"src":"pg1","error":"...","t":...}                   the REST API did not answer
# Each source is polled by a thread of its own, so a stalled node delays only its own lines.
# Runs with /usr/bin/python3.
import argparse
import base64
import json
import sys
import signal
import threading
import time
import urllib.request

parser = argparse.ArgumentParser()
parser.add_argument('--etcd', required=True, help='IP:PORT')
parser.add_argument('--key', required=True, help='the leader key, e.g. /service/SCOPE/leader')
parser.add_argument('--node', action='append', required=True, help='NAME=IP:API_PORT')
parser.add_argument('--every', type=float, default=0.25)
parser.add_argument('--out', required=True)
args = parser.parse_args()

out = open(args.out, 'a', buffering=1)
lock = threading.Lock()
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def say(event):
    event['t'] = int(time.time() * 1000)
    with lock:
        out.write(json.dumps(event) + '\n')


def watch(src, read):
    last = None
    while True:
        try:
            event = read()
        except Exception as error:
            # The kind of failure only: a timeout's text varies from poll to poll.
            event = {'error': type(error).__name__}
        if event != last:
            say({'src': src, **event})
            last = event
        time.sleep(args.every)


def leader_key():
    body = json.dumps({'key': base64.b64encode(args.key.encode()).decode()}).encode()
    request = urllib.request.Request(f'http://{args.etcd}/v3/kv/range', data=body, method='POST')
    with urllib.request.urlopen(request, timeout=1) as r:
        kvs = json.load(r).get('kvs') or []
    return {'leader': base64.b64decode(kvs[0]['value']).decode() if kvs else None}


def patroni(address):
    def read():
        try:
            with urllib.request.urlopen(f'http://{address}/patroni', timeout=1) as r:
                body = json.load(r)
        except urllib.error.HTTPError as error:
            # 503 still carries the node's view.
            body = json.load(error)
        role = body.get('role')
        return {'role': 'primary' if role == 'master' else role, 'state': body.get('state'), 'timeline': body.get('timeline')}
    return read


threads = [threading.Thread(target=watch, args=('etcd', leader_key), daemon=True)]
for spec in args.node:
    name, address = spec.split('=', 1)
    threads.append(threading.Thread(target=watch, args=(name, patroni(address)), daemon=True))
for thread in threads:
    thread.start()
while True:
    time.sleep(3600)
