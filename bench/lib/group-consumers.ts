/**
 * Stream consumer-group traffic for the exactness soak (redis-server only: Pika's streams cannot
 * be copied): a producer adds entries while consumers read through a group, acknowledge some,
 * claim others (XCLAIM at once, XAUTOCLAIM past a min-idle-time, which the write log must carry
 * as what the master's node claimed), through the master proxy before, during and after a sync.
 * The soak's SYNCPROXY VERIFY then compares the groups too (their state is part of a stream's
 * record: src/source/stream-state.ts), and `groupState` compares them directly.
 */
import type Redis from 'ioredis';

export const GROUP_STREAM = 'soak:jobs';
const GROUP = 'workers';

export class GroupConsumers {
  ops = 0;
  readonly errors: string[] = [];
  private stopping = false;
  private running?: Promise<void>;

  constructor(private readonly client: Redis) {}

  async prepare(): Promise<void> {
    for (let i = 0; i < 200; i++) await this.client.xadd(GROUP_STREAM, '*', 'job', String(i));
    await this.client.xgroup('CREATE', GROUP_STREAM, GROUP, '0');
  }

  start(): this {
    this.running = this.loop();
    return this;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.running;
  }

  private async loop(): Promise<void> {
    const c = this.client;
    for (let n = 0; !this.stopping; n++) {
      try {
        await c.xadd(GROUP_STREAM, '*', 'job', `live${n}`);
        const consumer = `c${n % 4}`;
        const read = (await c.call('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', '3', 'STREAMS', GROUP_STREAM, '>')) as [string, [string, string[]][]][] | null;
        const ids = read?.[0]?.[1].map(([id]) => id) ?? [];
        if (ids.length > 0 && n % 3 !== 0) await c.call('XACK', GROUP_STREAM, GROUP, ids[0]);
        if (ids.length > 1 && n % 5 === 0) await c.call('XCLAIM', GROUP_STREAM, GROUP, `c${(n + 1) % 4}`, '0', ids[1]);
        if (n % 7 === 0) await c.call('XAUTOCLAIM', GROUP_STREAM, GROUP, 'sweeper', '30', '0-0', 'COUNT', '5');
        this.ops += 3;
      } catch (err) {
        this.errors.push((err as Error).message);
        if (this.errors.length > 20) return;
      }
      await new Promise((r) => setTimeout(r, 2));
    }
  }
}

/** The group's state on a node, without what depends on the clock (idle times). */
export async function groupState(node: Redis): Promise<string> {
  const groups = (await node.call('XINFO', 'GROUPS', GROUP_STREAM)) as unknown[][];
  const consumers = (await node.call('XINFO', 'CONSUMERS', GROUP_STREAM, GROUP)) as unknown[][];
  const pending = (await node.call('XPENDING', GROUP_STREAM, GROUP, '-', '+', '100000')) as unknown[][];
  return JSON.stringify({
    groups,
    consumers: consumers.map((c) => [c[1], c[3]]), // name, pending
    pending: pending.map(([id, consumer, , deliveries]) => [id, consumer, deliveries]),
  });
}
