// serve's log: one line per event, as text (the default: an ISO time and the
// message) or, with --log-format json, one JSON object per line from pino:
// time, level, volume (when the event is about one) and msg.
import { createRequire } from 'node:module';

export type LogLevel = 'info' | 'warn' | 'error';

export interface LogFields {
  /** The volume the event is about. */
  volume?: string;
  level?: LogLevel;
}

export type Log = (message: string, fields?: LogFields) => void;

export const LOG_FORMATS = ['text', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export function serveLog(format: LogFormat): Log {
  if (format === 'text') return (message) => console.log(`${new Date().toISOString()} ${message}`);
  const pino = createRequire(import.meta.url)('pino') as typeof import('pino').default;
  // synchronous: a line is out before the process exits, as console.log's are
  const logger = pino(
    { base: undefined, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } },
    pino.destination({ fd: 1, sync: true }),
  );
  return (message, fields = {}) => {
    const { level = 'info', volume } = fields;
    logger[level](volume === undefined ? {} : { volume }, message);
  };
}
