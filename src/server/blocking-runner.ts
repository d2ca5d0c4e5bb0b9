/**
 * Runs a blocking pop's plan (blocking.ts) for one client: try the non-blocking forms through the
 * ordered path (each a logged write behind the snapshot gate), park until a write touches the
 * keys, try again; the client's later commands wait, as they would behind a blocked command.
 */
import type { FramedReply } from '../resp/reply-framer';
import * as encode from '../resp/encode';
import { requestOf } from '../resp/request-parser';
import { planBlocking } from './blocking';
import type { ClientSession } from './client-session';
import { errorReply } from './refusals';

export async function runBlocking(s: ClientSession, name: string, args: Buffer[]): Promise<void> {
  const plan = planBlocking(name, args);
  if (typeof plan === 'string') return s.reply(encode.error(plan));
  const deadline = plan.timeoutMs === 0 ? Infinity : Date.now() + plan.timeoutMs;
  const slot = s.slot();
  let current: { wake(): void } | undefined;
  s.onClosed(() => current?.wake());
  while (!s.closed) {
    const waiter = s.ctx.blocked.register(s, s.db, plan.keys);
    current = waiter;
    try {
      for (const attempt of plan.attempts) {
        const scope = { kind: 'keys' as const, db: s.db, keys: attempt.keys };
        const wait = s.gate(scope);
        if (wait) await wait;
        const reply = await new Promise<FramedReply>((resolve, reject) => {
          s.ctx.path.sendWrite(s.db, requestOf(attempt.args), scope, (r, err) => (r ? resolve(r) : reject(err)), 0, s);
        });
        if (reply.type === 45) return s.fill(slot, reply.raw);
        const converted = attempt.convert(reply.raw);
        if (converted) return s.fill(slot, converted);
      }
      if (waiter.touched) continue;
      const woken = await waiter.wait(deadline - Date.now());
      if (!woken) return s.fill(slot, plan.timeoutReply);
    } catch (err) {
      return s.fill(slot, errorReply(err));
    } finally {
      s.ctx.blocked.unregister(waiter);
    }
  }
}
