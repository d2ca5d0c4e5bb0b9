#!/usr/bin/env node
/**
 * pika-sync-proxy CLI: validates the configuration, starts the proxy, and stops it gracefully on
 * SIGTERM/SIGINT (stop accepting, drain replies in flight, close the node connection).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { loadConfig, usage } from './config';
import { describeError } from './errors';
import { createLogger } from './logger';
import { startProxy } from './server/proxy';

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--version') || argv.includes('-V')) {
    process.stdout.write(`pika-sync-proxy ${packageVersion()}\n`);
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
  const logger = createLogger(config.logLevel);
  logger.info({ config: { ...config, requirepass: undefined, backendPassword: undefined, masterauth: undefined } }, 'starting');
  const proxy = await startProxy(config, logger);
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (++signals > 1) process.exit(1);
    logger.info({ signal }, 'graceful stop requested');
    proxy.stop().then(
      () => process.exit(0),
      (err) => {
        logger.error({ err: describeError(err) }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

/** The version in package.json (dist/src/main.js -> ../../package.json, as installed by npm). */
function packageVersion(): string {
  const file = path.resolve(__dirname, '../../package.json');
  return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
}

main().catch((err) => {
  process.stderr.write(`pika-sync-proxy: ${describeError(err)}\n`);
  process.exit(1);
});
