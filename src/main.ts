#!/usr/bin/env node
/**
 * pika-sync-proxy CLI: validates the configuration, starts the proxy, and stops it gracefully on
 * SIGTERM/SIGINT (stop accepting, drain replies in flight, close the node connection) within
 * --shutdown-timeout-ms: past it, or on a second signal, it exits with status 1 and says on stderr
 * what was left undone. Logs go to stdout through a destination that drops lines once stdout is
 * gone (EPIPE) instead of retrying: a log reader that went away never holds the process.
 */
import { writeSync } from 'node:fs';
import { loadConfig, usage } from './config';
import { describeError } from './errors';
import { LogDestination } from './log-destination';
import { createLogger } from './logger';
import { VERSION, startProxy } from './server/proxy';

async function main(): Promise<void> {
  ignoreStdioErrors();
  const argv = process.argv.slice(2);
  if (argv.includes('--version') || argv.includes('-V')) {
    process.stdout.write(`pika-sync-proxy ${VERSION}\n`);
    return;
  }
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${usage()}\n`);
    return;
  }
  let config;
  try {
    config = loadConfig(argv);
  } catch (err) {
    process.stderr.write(`pika-sync-proxy: ${describeError(err)}\n\n${usage()}\n`);
    process.exit(2);
  }
  const destination = new LogDestination({ fd: 1 });
  const logger = createLogger(config.logLevel, destination);
  process.on('exit', () => destination.flushSync());
  logger.info({ config: { ...config, requirepass: undefined, backendPassword: undefined, masterauth: undefined } }, 'starting');
  const proxy = await startProxy(config, logger);
  const exit = (code: number, stderrText?: string): never => {
    logger.info({ exitCode: code, logLinesDropped: destination.dropped }, 'exiting');
    destination.flushSync();
    if (stderrText) writeStderr(stderrText);
    process.exit(code);
  };
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (++signals > 1) exit(1, `pika-sync-proxy: ${signal} during the graceful stop: exiting at once; left undone: ${proxy.stopProgress.describe()}\n`);
    logger.info({ signal, timeoutMs: config.shutdownTimeoutMs }, 'graceful stop requested');
    setTimeout(() => {
      const left = proxy.stopProgress.describe();
      logger.error({ left, timeoutMs: config.shutdownTimeoutMs }, 'graceful stop did not finish in time');
      exit(1, `pika-sync-proxy: the graceful stop did not finish within --shutdown-timeout-ms ${config.shutdownTimeoutMs}; exiting with status 1; left undone: ${left}\n`);
    }, config.shutdownTimeoutMs);
    proxy.stop().then(
      () => exit(0),
      (err) => {
        logger.error({ err: describeError(err) }, 'error while stopping');
        exit(1, `pika-sync-proxy: error while stopping: ${describeError(err)}\n`);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

/**
 * stdout/stderr whose reader went away (EPIPE) must neither crash nor hold the process: their
 * stream errors are ignored (the logger has its own destination, which drops lines once gone).
 */
function ignoreStdioErrors(): void {
  process.stdout.on('error', () => undefined);
  process.stderr.on('error', () => undefined);
}

/** Best effort, synchronous, never throws: the last words of a process that is exiting. */
function writeStderr(text: string): void {
  try {
    writeSync(2, text);
  } catch {
    // stderr is gone too: nobody to tell
  }
}

main().catch((err) => {
  process.stderr.write(`pika-sync-proxy: ${describeError(err)}\n`);
  process.exit(1);
});
