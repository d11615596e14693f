// An application's writer: inserts one row per statement (autocommit, so an
// answer is an acknowledged commit), with a client-side timeout like a real
// app's, reconnecting after any error. One JSON line per event on stdout:
//   {"ev":"connected","t":...}
//   {"ev":"ack","id":N,"t":...}                    the commit of row N was acknowledged
//   {"ev":"error","op":"connect"|"query","code":"...","id":N,"t":...}
// Usage: sqlclient.mjs HOST PORT TIMEOUT_MS FIRST_ID
import mysql from 'mysql2';

const [host, portText, timeoutText, firstIdText] = process.argv.slice(2);
const timeout = Number(timeoutText);
let id = Number(firstIdText);
const say = event => process.stdout.write(`${JSON.stringify({...event, t: Date.now()})}\n`);
const pause = ms => new Promise(resolve => setTimeout(resolve, ms));

function connect() {
  return new Promise((resolve, reject) => {
    const connection = mysql.createConnection({host, port: Number(portText), user: 'app', password: 'app', database: 'app', connectTimeout: timeout});
    // A connection cut later surfaces here as well as in the query callback.
    connection.on('error', () => {});
    connection.connect(error => (error ? reject(error) : resolve(connection)));
  });
}

function insert(connection, row) {
  return new Promise((resolve, reject) => {
    connection.query({sql: 'INSERT INTO t (id) VALUES (?)', timeout, values: [row]}, error => (error ? reject(error) : resolve()));
  });
}

process.on('SIGTERM', () => process.exit(0));

let connection = null;
for (;;) {
  if (connection === null) {
    try {
      connection = await connect();
      say({ev: 'connected'});
    } catch (error) {
      say({ev: 'error', op: 'connect', code: error.code ?? String(error.message)});
      await pause(100);
      continue;
    }
  }
  const row = id++;
  try {
    await insert(connection, row);
    say({ev: 'ack', id: row});
  } catch (error) {
    // The row is in doubt (it may still commit later); its id is never reused.
    say({ev: 'error', op: 'query', code: error.code ?? String(error.message), id: row});
    connection.destroy();
    connection = null;
    await pause(100);
  }
}
