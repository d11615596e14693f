import assert from 'node:assert/strict';
import {describe, it} from 'node:test';

import {changesTransaction, commentFor, emptyChanges, parseDuration, parseTable, planPorts, rearmTimeout, replaceTransaction} from '../../src/fencing';

const LISTING = `table inet ebsmon {
\tset guarded {
\t\ttype inet_service
\t\telements = { 80 comment "www,web", 443 comment "web",
\t\t\t     3306 comment "mysql" }
\t}

\tset alive {
\t\ttype inet_service
\t\tflags timeout
\t\telements = { 80, 443 timeout 9s500ms expires 8s12ms,
\t\t\t     5000 timeout 1m2s expires 1m1s999ms }
\t}

\tset isolated {
\t\ttype inet_service
\t\telements = { 2379 comment "pg" }
\t}

\tset reachable {
\t\ttype inet_service
\t\tflags timeout
\t}

\tchain input {
\t\ttype filter hook input priority filter; policy accept;
\t\tiifname != "lo" meta l4proto tcp ct direction original ct original proto-dst @guarded ct original proto-dst != @alive reject with tcp reset comment "ebsmon"
\t\tiifname != "lo" meta l4proto tcp ct direction reply ct original proto-dst @isolated ct original proto-dst != @reachable drop comment "ebsmon"
\t}

\tchain output {
\t\ttype filter hook output priority filter; policy accept;
\t\toifname != "lo" meta l4proto tcp ct direction original ct original proto-dst @isolated ct original proto-dst != @reachable reject with tcp reset comment "ebsmon"
\t\toifname != "lo" tcp flags ! rst ct direction reply ct original proto-dst @guarded ct original proto-dst != @alive drop comment "ebsmon"
\t}

\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tmeta l4proto tcp ct direction original ct original proto-dst @guarded ct original proto-dst != @alive fib saddr type != local reject with tcp reset comment "ebsmon"
\t\ttcp flags ! rst ct direction reply ct original proto-dst @guarded ct original proto-dst != @alive fib daddr type != local drop comment "ebsmon"
\t}
}`;

describe('nftables text: built and read by pure functions', () => {
  it('reads nft durations', () => {
    assert.equal(parseDuration('9s500ms'), 9500);
    assert.equal(parseDuration('1m1s999ms'), 61_999);
    assert.equal(parseDuration('2d3h'), 2 * 86_400_000 + 3 * 3_600_000);
    assert.equal(parseDuration('12ms'), 12);
    assert.equal(parseDuration('soon'), null);
    assert.equal(parseDuration(''), null);
  });

  it('reads a listing: elements across lines, comments with commas, deadlines, the rule', () => {
    const table = parseTable(LISTING);
    assert.ok(table !== null);
    assert.deepEqual([...table.guarded.values()].map(e => [e.port, e.comment]), [[80, 'www,web'], [443, 'web'], [3306, 'mysql']]);
    assert.deepEqual(table.alive.get(80), {port: 80, timeoutMs: null, expiresMs: null, comment: null});
    assert.deepEqual(table.alive.get(443), {port: 443, timeoutMs: 9500, expiresMs: 8012, comment: null});
    assert.equal(table.alive.get(5000)?.expiresMs, 61_999);
    assert.equal(table.alive.has(3306), false, 'fenced: guarded and not alive');
    assert.deepEqual([...table.isolated.values()].map(e => [e.port, e.comment]), [[2379, 'pg']]);
    assert.equal(table.reachable.size, 0, 'isolated and not reachable: cut');
    assert.equal(table.ruleInPlace, true);
    assert.deepEqual(table.unexpected, []);
  });

  it('a missing forward chain is a changed rule', () => {
    const without = LISTING.replace(/\n\n\tchain forward \{[\s\S]*?\n\t\}/, '');
    assert.ok(!without.includes('forward'));
    assert.equal(parseTable(without)?.ruleInPlace, false);
  });

  it('notices a changed rule, a foreign chain and a missing set', () => {
    const changed = parseTable(LISTING.replace('reject with tcp reset', 'accept').replace('\tset alive {', '\tchain extra {\n\t\ttype filter hook input priority -10; policy accept;\n\t}\n\n\tset alive2 {'));
    assert.ok(changed !== null);
    assert.equal(changed.ruleInPlace, false);
    assert.deepEqual(changed.unexpected.sort(), ['chain extra', 'set alive (missing or changed)', 'set alive2'].sort());
    const before = parseTable(LISTING.replace(/\n\n\tset isolated \{[\s\S]*?\n\t\}\n\n\tset reachable \{[\s\S]*?\n\t\}/, ''));
    assert.deepEqual(before?.unexpected.sort(), ['set isolated (missing or changed)', 'set reachable (missing or changed)'], 'a table written before isolation existed is rewritten');
    assert.equal(parseTable('Error: No such file or directory'), null);
  });

  it('a replace writes the whole table in one transaction, deadlines as time left', () => {
    const text = replaceTransaction([
      {port: 80, comment: 'web', alive: {kind: 'armed', ms: 9_876.6}},
      {port: 3306, comment: 'mysql', alive: {kind: 'fenced'}},
      {port: 8080, comment: '', alive: {kind: 'open'}},
    ]);
    // One line (one nft -i transaction), never a flush; the forward chain fences published container ports too.
    assert.equal(text, [
      'add table inet ebsmon',
      'delete table inet ebsmon',
      'add table inet ebsmon',
      'add set inet ebsmon guarded { type inet_service; }',
      'add set inet ebsmon alive { type inet_service; flags timeout; }',
      'add set inet ebsmon isolated { type inet_service; }',
      'add set inet ebsmon reachable { type inet_service; flags timeout; }',
      'add chain inet ebsmon input { type filter hook input priority filter; policy accept; }',
      'add rule inet ebsmon input iifname != "lo" meta l4proto tcp ct direction original ct original proto-dst @guarded ct original proto-dst != @alive reject with tcp reset comment "ebsmon"',
      'add rule inet ebsmon input iifname != "lo" meta l4proto tcp ct direction reply ct original proto-dst @isolated ct original proto-dst != @reachable drop comment "ebsmon"',
      'add chain inet ebsmon output { type filter hook output priority filter; policy accept; }',
      'add rule inet ebsmon output oifname != "lo" meta l4proto tcp ct direction original ct original proto-dst @isolated ct original proto-dst != @reachable reject with tcp reset comment "ebsmon"',
      'add rule inet ebsmon output oifname != "lo" tcp flags ! rst ct direction reply ct original proto-dst @guarded ct original proto-dst != @alive drop comment "ebsmon"',
      'add chain inet ebsmon forward { type filter hook forward priority filter; policy accept; }',
      'add rule inet ebsmon forward meta l4proto tcp ct direction original ct original proto-dst @guarded ct original proto-dst != @alive fib saddr type != local reject with tcp reset comment "ebsmon"',
      'add rule inet ebsmon forward tcp flags ! rst ct direction reply ct original proto-dst @guarded ct original proto-dst != @alive fib daddr type != local drop comment "ebsmon"',
      'add element inet ebsmon guarded { 80 comment "web", 3306 comment "mysql", 8080 }',
      'add element inet ebsmon alive { 80 timeout 9876ms, 8080 }',
    ].join('; '));
  });

  it('changes: add-delete-add re-arms, plain re-adds, opens and closes, in one line, never a flush', () => {
    const text = changesTransaction({
      ...emptyChanges(),
      guardedAdd: [{port: 9000, comment: 'new'}],
      guardedDelete: [7000],
      arm: [{port: 9000, ms: 5_000}],
      rearm: [{port: 80, ms: 9_000}],
      open: [81],
      close: [7000],
    });
    assert.equal(text, [
      'delete element inet ebsmon guarded { 7000 }',
      'add element inet ebsmon guarded { 9000 comment "new" }',
      'add element inet ebsmon alive { 9000 timeout 5000ms, 81, 7000 }',
      'delete element inet ebsmon alive { 9000, 81, 7000 }',
      'add element inet ebsmon alive { 9000 timeout 5000ms, 80 timeout 9000ms, 81 }',
    ].join('; '));
  });

  it('a port several reporters guard is fenced if any is fenced, else armed to the earliest deadline', () => {
    const plan = planPorts([
      {name: 'b', ports: [80, 443], arm: {state: 'armed', until: 5_000}, isolate: [], voice: {state: 'armed', until: 5_000}},
      {name: 'a', ports: [80], arm: {state: 'armed', until: 3_000}, isolate: [], voice: {state: 'armed', until: 3_000}},
      {name: 'c', ports: [443, 8443], arm: {state: 'fenced'}, isolate: [], voice: {state: 'fenced'}},
      {name: 'd', ports: [9000], arm: {state: 'open'}, isolate: [], voice: {state: 'open'}},
      {name: 'e', ports: [9000], arm: {state: 'armed', until: 7_000}, isolate: [], voice: {state: 'armed', until: 7_000}},
      {name: 'late', ports: [9100], arm: {state: 'armed', until: 999}, isolate: [], voice: {state: 'armed', until: 999}},
    ], 1_000);
    assert.deepEqual(plan.get(80), {port: 80, comment: 'a,b', alive: {kind: 'armed', ms: 2_000, until: 3_000}});
    assert.deepEqual(plan.get(443)?.alive, {kind: 'fenced'});
    assert.deepEqual(plan.get(8443)?.alive, {kind: 'fenced'});
    assert.deepEqual(plan.get(9000)?.alive, {kind: 'armed', ms: 6_000, until: 7_000}, 'an override does not lift a healthy co-owner\'s deadline');
    assert.deepEqual(plan.get(9100)?.alive, {kind: 'fenced'}, 'a deadline already past is a fence, never an arm');
  });

  it('a plain re-add always changes the timeout by more than a jiffy, and never past the deadline', () => {
    assert.equal(rearmTimeout(1_896, 1_896.7), 1_886, 'the same value again would be ignored by the kernel');
    assert.equal(rearmTimeout(1_886, 1_896.2), 1_896);
    assert.equal(rearmTimeout(1_897, 1_896), 1_887, 'same jiffy at HZ=250 or 100: 10 ms less, not more');
    assert.equal(rearmTimeout(1_500, 1_900), 1_900);
  });

  it('element comments stay within nft\'s 128 bytes', () => {
    const many = Array.from({length: 20}, (_, i) => `reporter-${i}`);
    assert.ok(commentFor(many).length <= 128);
    assert.equal(commentFor(['a', 'b']), 'a,b');
  });
});
