/**
 * What the side-by-side throughput benchmarks (proxy-throughput, node-floor) share: the same
 * redis with the proxy and twemproxy in front of it, and ratios paired within a round.
 */
import { RedisServer } from '../../test/helpers/redis-server';
import { ProxyProcess } from '../../test/helpers/proxy-process';
import { Cleanup, Nutcracker, requireCommands } from './tools';

/** Exits with the install command when redis-server, redis-benchmark or nutcracker is missing. */
export function requireThroughputTools(): void {
  requireCommands([
    { command: 'redis-server', aptPackage: 'redis-server' },
    { command: 'redis-benchmark', aptPackage: 'redis-tools' },
    { command: 'nutcracker', aptPackage: 'nutcracker' },
  ]);
}

/** One redis, the proxy (CLI, log level warn) and twemproxy in front of it; `cleanup` stops them. */
export async function startRedisProxyTwemproxy(cleanup: Cleanup): Promise<{ redis: RedisServer; proxy: ProxyProcess; twemproxy: Nutcracker }> {
  const redis = await RedisServer.start();
  cleanup.add('redis-server', () => redis.stop());
  const proxy = await ProxyProcess.start({ backend: redis, extraArgs: ['--log-level', 'warn'] });
  cleanup.add('proxy', () => proxy.stop());
  const twemproxy = await Nutcracker.start(redis.port);
  cleanup.add('nutcracker', () => twemproxy.stop());
  return { redis, proxy, twemproxy };
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/**
 * `a[i] / b[i]` for each round i (measured seconds apart, so in the same phase of the host):
 * their median, and their range as text.
 */
export function pairedRatio(a: number[], b: number[]): { median: number; range: string } {
  const ratios = a.map((x, i) => x / b[i]);
  return { median: median(ratios), range: `${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}` };
}
