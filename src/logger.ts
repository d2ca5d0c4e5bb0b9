/**
 * pino root logger. Components never import this module's singleton: they receive a child
 * (`logger.child({ component: 'copier' })`) from whoever builds them, so tests can inject a
 * silent or capturing logger.
 */
import pino, { Logger } from 'pino';

export type { Logger } from 'pino';

/** Paths pino blanks out: secrets never reach a log line. */
export const REDACTED_PATHS = [
  'password',
  'requirepass',
  'backendPassword',
  'masterauth',
  'config.requirepass',
  'config.backendPassword',
  'config.masterauth',
  '*.password',
  'args',
];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level,
    base: { pid: process.pid },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return destination ? pino(options, destination) : pino(options);
}

/** A logger that drops everything; for tests and library use. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/**
 * Command arguments for a log line: the command name and key are kept, values and any argument
 * of AUTH/CONFIG SET/MIGRATE/HELLO are replaced, so passwords never appear in logs.
 */
export function redactCommand(args: readonly Buffer[]): string {
  if (args.length === 0) return '';
  const name = args[0].toString('latin1').toLowerCase();
  if (['auth', 'hello', 'config', 'migrate', 'acl', 'masterauth', 'slaveof', 'replicaof'].includes(name)) {
    return `${name} [${args.length - 1} args redacted]`;
  }
  const key = args.length > 1 ? ` ${args[1].toString('utf8').slice(0, 64)}` : '';
  return `${name}${key}${args.length > 2 ? ` [+${args.length - 2} args]` : ''}`;
}
