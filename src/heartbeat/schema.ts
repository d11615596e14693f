import * as t from 'typanion';

export const PROTOCOL_VERSION = 1;
/** Largest line, newline included: a write of at most PIPE_BUF bytes to a FIFO is atomic (pipe(7)). */
export const MAX_LINE_BYTES = 4096;
export const MAX_PORTS = 64;

export const NAME_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

export const isName = t.cascade(t.isString(), [t.matchesRegExp(NAME_PATTERN)]);
export const isPort = t.cascade(t.isNumber(), [t.isInteger(), t.isInInclusiveRange(1, 65535)]);
export const isPortList = t.cascade(t.isArray(isPort), [t.hasMinLength(1), t.hasMaxLength(MAX_PORTS), t.hasUniqueItems()]);
export const isPid = t.cascade(t.isNumber(), [t.isInteger(), t.isAtLeast(1)]);
/** Durations are seconds; zero or negative would make a deadline meaningless. */
export const isSeconds = t.cascade(t.isNumber(), [t.isAtLeast(0.001), t.isAtMost(86400)]);
const isCount = t.cascade(t.isNumber(), [t.isInteger(), t.isAtLeast(0)]);
const isEpochMs = t.cascade(t.isNumber(), [t.isAtLeast(0)]);

export const isHeartbeat = t.isObject({
  v: t.isLiteral(PROTOCOL_VERSION),
  kind: t.isLiteral('heartbeat'),
  name: isName,
  pid: isPid,
  ports: isPortList,
  interval: isSeconds,
  probeTimeout: isSeconds,
  seq: isCount,
  sentAt: isEpochMs,
  probeMs: t.cascade(t.isNumber(), [t.isAtLeast(0)]),
});

export const isGoodbye = t.isObject({
  v: t.isLiteral(PROTOCOL_VERSION),
  kind: t.isLiteral('goodbye'),
  name: isName,
  pid: isPid,
});

const isUser = t.cascade(t.isString(), [t.hasMaxLength(64)]);

export const isUnblockOne = t.isObject({
  v: t.isLiteral(PROTOCOL_VERSION),
  kind: t.isLiteral('unblock'),
  name: isName,
  pid: isPid,
  user: isUser,
});

export const isUnblockAll = t.isObject({
  v: t.isLiteral(PROTOCOL_VERSION),
  kind: t.isLiteral('unblock'),
  all: t.isLiteral(true),
  pid: isPid,
  user: isUser,
});

export const isUnblock = t.isOneOf([isUnblockOne, isUnblockAll], {exclusive: true});

export type Heartbeat = t.InferType<typeof isHeartbeat>;
export type Goodbye = t.InferType<typeof isGoodbye>;
export type UnblockOne = t.InferType<typeof isUnblockOne>;
export type UnblockAll = t.InferType<typeof isUnblockAll>;
export type Unblock = t.InferType<typeof isUnblock>;
export type Message = Heartbeat | Goodbye | Unblock;
export type MessageKind = Message['kind'];

export const messageValidators: Record<MessageKind, t.StrictValidator<unknown, Message>> = {
  heartbeat: isHeartbeat,
  goodbye: isGoodbye,
  unblock: isUnblock,
};
