import * as t from 'typanion';

import {isName, isPort, isPortList, isSeconds} from './heartbeat/schema';
import {LOG_FORMATS, LOG_LEVELS} from './log';

/**
 * Command-line validators built on the wire schema's own validators, so a flag
 * and a message field can never disagree about what a port or a name is.
 * Each accepts the string clipanion hands it and coerces it to the typed value.
 */
function fromString<T>(expected: string, parse: (text: string) => unknown, validator: t.StrictValidator<unknown, T>): t.StrictValidator<unknown, T> {
  return t.makeValidator<unknown, T>({
    test: (value, state): value is T => {
      const parsed = typeof value === 'string' ? parse(value) : value;
      if (!validator(parsed)) {
        state?.errors?.push(`${state.p ?? '.'}: expected ${expected} (got ${JSON.stringify(value)})`);
        return false;
      }
      if (typeof value === 'string' && state?.coercions !== undefined && state.coercion !== undefined)
        state.coercions.push([state.p ?? '.', state.coercion.bind(null, parsed)]);
      return true;
    },
  });
}

const parseNumber = (text: string) => (/^\s*[+-]?(\d+\.?\d*|\.\d+)\s*$/.test(text) ? Number(text) : NaN);
const parseList = (text: string) => text.split(',').map(part => parseNumber(part));

export const secondsArg = fromString('a positive number of seconds, e.g. 0.5', parseNumber, isSeconds);
export const countArg = fromString('a whole number of at least 1', parseNumber, t.cascade(t.isNumber(), [t.isInteger(), t.isAtLeast(1)]));
export const portListArg = fromString('ports 1-65535 separated by commas, e.g. 80,443', parseList, isPortList);
/** --protect-ports may be empty (protect nothing), unlike a reporter's --ports. */
export const protectPortsArg = fromString('ports 1-65535 separated by commas, or an empty list', text => (text.trim() === '' ? [] : parseList(text)), t.isArray(isPort));
export const nameArg = fromString('1-64 characters of A-Z a-z 0-9 . _ -', text => text, isName);
export const logLevelArg = t.isEnum(LOG_LEVELS);
/** --firewall: auto is nftables where nft works, else iptables. */
export const FIREWALL_CHOICES = ['auto', 'nftables', 'iptables'] as const;
export type FirewallChoice = typeof FIREWALL_CHOICES[number];
export const firewallArg = t.isEnum(FIREWALL_CHOICES);
export const logFormatArg = t.isEnum(LOG_FORMATS);
