/**
 * Runs a blocking pop's plan (blocking.ts) for one client: try the non-blocking forms through the
 * ordered path (each a logged write behind the snapshot gate), park until a write touches the
 * keys, try again; the client's later commands wait, as they would behind a blocked command.
 * The client stays registered from the first try to its answer, so the order in which blocked
 * clients are woken (and pop) is the order in which they blocked, whatever wake-ups came between.
 */
import type { FramedReply } from '../resp/reply-framer';
import * as encode from '../resp/encode';
import { encodeArgs, requestOf } from '../resp/request-parser';
import { BlockingAttempt, isWrongType, planBlocking, PopAttempt } from './blocking';
import type { ClientSession } from './client-session';
import { errorReply } from './refusals';

const UNBLOCKED = encode.error('UNBLOCKED client unblocked via CLIENT UNBLOCK');

type Outcome = { reply: Buffer; popped: boolean } | 'wait';

export async function runBlocking(s: ClientSession, name: string, args: Buffer[]): Promise<void> {
  const plan = planBlocking(name, args);
  if (typeof plan === 'string') return s.reply(encode.error(plan));
  const deadline = plan.timeoutMs === 0 ? Infinity : Date.now() + plan.timeoutMs;
  const slot = s.slot();
  const origin = new PopAttempt(s);
  const waiter = s.ctx.blocked.register(s, s.db, plan.keys);
  s.onClosed(() => waiter.wake());
  try {
    // First round: the command as called (a key of the wrong type answers -WRONGTYPE); later
    // rounds: wake-ups, where a key missing or of the wrong type keeps the client blocked.
    for (let wokenUp = false; !s.closed; wokenUp = true) {
      // CLIENT UNBLOCK wakes the waiter: the next round ends the pop instead of trying again.
      if (waiter.unblocked) return s.fill(slot, waiter.unblocked === 'error' ? UNBLOCKED : plan.timeoutReply);
      waiter.touched = false;
      for (const attempt of plan.attempts) {
        const outcome = await tryAttempt(s, origin, attempt, wokenUp);
        if (outcome === 'wait') continue;
        // A pop changed its keys: wake the clients blocked on them (BLMOVE's destination).
        if (outcome.popped) s.ctx.blocked.applied({ kind: 'keys', db: s.db, keys: attempt.keys }, s);
        return s.fill(slot, outcome.reply);
      }
      if (waiter.touched) continue;
      waiter.settle();
      if (!(await waiter.wait(deadline - Date.now()))) return s.fill(slot, plan.timeoutReply);
    }
  } catch (err) {
    return s.fill(slot, errorReply(err));
  } finally {
    s.ctx.blocked.unregister(waiter);
  }
}

/** One non-blocking try: the client's answer, or 'wait' (nothing to pop, or a wake-up's wrong type). */
async function tryAttempt(s: ClientSession, origin: PopAttempt, attempt: BlockingAttempt, wokenUp: boolean): Promise<Outcome> {
  const scope = { kind: 'keys' as const, db: s.db, keys: attempt.keys };
  const wait = s.gate(scope);
  if (wait) await wait;
  const reply = new Promise<FramedReply>((resolve, reject) => {
    s.ctx.path.sendWrite(s.db, requestOf(attempt.args), scope, (r, err) => (r ? resolve(r) : reject(err)), 0, origin, s.lanes);
  });
  // Right behind the move on its lane (nothing runs between; a move across lanes runs on its
  // source's lane, see OrderedPath.carrierOf): the source's type
  // at the instant of the move.
  const sourceType = wokenUp && attempt.source ? readType(s, attempt.source) : undefined;
  sourceType?.catch(() => undefined);
  const raw = (await reply).raw;
  if (raw[0] === 45) {
    if (!wokenUp || !isWrongType(raw)) return { reply: raw, popped: false };
    if (!sourceType || (await sourceType) !== 'list') return 'wait';
    return { reply: raw, popped: false };
  }
  const converted = attempt.convert(raw);
  return converted ? { reply: converted, popped: true } : 'wait';
}

function readType(s: ClientSession, key: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    s.ctx.path.send(s.db, encodeArgs([Buffer.from('TYPE'), key]), (r, err) => {
      if (!r) return reject(err);
      resolve(r.raw.toString('latin1', 1, r.raw.length - 2));
    }, s.lanes);
  });
}
