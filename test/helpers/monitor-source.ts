// `ebsmon monitor --firewall=nftables` run from source, with the one setting its
// command line does not offer: how often it reads the table back (MonitorOptions'
// reconcileMs). A test that must see what nft monitor alone repairs sets it far
// away. The same runRole and runMonitor as the command, JSON logs on stderr.
// Usage: monitor-source.ts RECONCILE_MS FIFO STATE_DIR TIMEOUT_SECONDS
import {runRole} from '../../src/daemon';
import {runMonitor} from '../../src/monitor';

const [reconcileMs, fifo, stateDir, timeout] = process.argv.slice(2);
runRole({args: [], stdout: process.stdout, stderr: process.stderr, role: 'monitor'}, {daemonize: false, logLevel: 'debug', logFormat: 'json'},
  (logger, onReady, signal) => runMonitor({logger, onReady}, {
    fifo: fifo!,
    stateDir: stateDir!,
    timeout: Number(timeout),
    recover: 2,
    protectPorts: [22],
    maxReporters: 1024,
    firewall: 'nftables',
    reconcileMs: Number(reconcileMs),
  }, signal)).catch((error: Error) => {
  process.stderr.write(`${error.stack ?? error.message}\n`);
  process.exitCode = 1;
});
