/**
 * The replica's guarded state machine (see STATE-DIAGRAM.md beside this file). Every transition
 * is checked against one table, logged with its reason and timed, so `SYNCPROXY STATUS` can show
 * how long each phase took and an illegal transition is a loud INTERNAL error, never a silent
 * jump to a state that would unlock reads.
 */
import type { Logger } from 'pino';
import { SyncProxyError } from '../errors';

export type SyncState =
  | 'none'
  | 'connecting'
  | 'fetching_meta'
  | 'copying'
  | 'verifying'
  | 'loading'
  | 'catching_up'
  | 'streaming'
  | 'backoff'
  | 'failed';

export const SYNC_STATES: readonly SyncState[] = ['none', 'connecting', 'fetching_meta', 'copying', 'verifying', 'loading', 'catching_up', 'streaming', 'backoff', 'failed'];

/**
 * Allowed transitions. Every working state may fall to backoff (retryable error), failed (fatal or
 * attempts exhausted) or none (SLAVEOF NO ONE / a new master). Special edges:
 * - copying/verifying -> fetching_meta: the snapshot id changed under the copy;
 * - connecting -> catching_up: after a confirmed sync, a lost link resumes the write log from
 *   the applied offset without a new full sync;
 * - streaming -> connecting: LOG_OFFSET_GONE, a new full sync begins at once.
 */
export const TRANSITIONS: Readonly<Record<SyncState, readonly SyncState[]>> = Object.freeze({
  none: ['connecting'],
  connecting: ['fetching_meta', 'catching_up', 'backoff', 'failed', 'none'],
  fetching_meta: ['copying', 'backoff', 'failed', 'none'],
  copying: ['verifying', 'fetching_meta', 'backoff', 'failed', 'none'],
  verifying: ['loading', 'fetching_meta', 'backoff', 'failed', 'none'],
  loading: ['catching_up', 'backoff', 'failed', 'none'],
  catching_up: ['streaming', 'backoff', 'failed', 'none'],
  streaming: ['connecting', 'backoff', 'failed', 'none'],
  backoff: ['connecting', 'failed', 'none'],
  failed: ['connecting', 'none'],
});

export interface PhaseRecord {
  state: SyncState;
  reason: string;
  startedAtMs: number;
  endedAtMs?: number;
  durationMs?: number;
}

export type TransitionListener = (from: SyncState, to: SyncState, reason: string) => void;

/** Bound on remembered phases: a replica streaming for weeks with flapping links stays small. */
const MAX_PHASES = 200;

export class SyncStateMachine {
  private current: SyncState = 'none';
  private readonly history: PhaseRecord[] = [{ state: 'none', reason: 'initial', startedAtMs: Date.now() }];
  private readonly listeners: TransitionListener[] = [];
  private readonly logger: Logger;

  constructor(logger: Logger) {
    this.logger = logger.child({ component: 'replica-state' });
  }

  get state(): SyncState {
    return this.current;
  }

  /** Phases so far, oldest first; the last one is still open (no endedAtMs). */
  get phases(): readonly PhaseRecord[] {
    return this.history;
  }

  /** When the current state was entered. */
  get enteredAtMs(): number {
    return this.history[this.history.length - 1].startedAtMs;
  }

  canTransition(to: SyncState): boolean {
    return TRANSITIONS[this.current].includes(to);
  }

  /** Moves to `to` or throws INTERNAL when the table does not allow it. */
  transition(to: SyncState, reason: string): void {
    const from = this.current;
    if (!this.canTransition(to)) {
      const err = new SyncProxyError('INTERNAL', `illegal replica state transition ${from} -> ${to} (${reason})`, { details: { from, to } });
      this.logger.error({ from, to, reason }, 'illegal replica state transition');
      throw err;
    }
    const now = Date.now();
    const open = this.history[this.history.length - 1];
    open.endedAtMs = now;
    open.durationMs = now - open.startedAtMs;
    this.history.push({ state: to, reason, startedAtMs: now });
    if (this.history.length > MAX_PHASES) this.history.splice(0, this.history.length - MAX_PHASES);
    this.current = to;
    this.logger.info({ from, to, reason, phaseMs: open.durationMs }, `replica state ${from} -> ${to}: ${reason}`);
    for (const listener of this.listeners) listener(from, to, reason);
  }

  onTransition(listener: TransitionListener): void {
    this.listeners.push(listener);
  }

  /** Phases since the last entry into `state` (e.g. the current attempt's phases). */
  phasesSince(state: SyncState): PhaseRecord[] {
    for (let i = this.history.length - 1; i >= 0; i--) {
      if (this.history[i].state === state) return this.history.slice(i);
    }
    return [...this.history];
  }
}

/** States in which the replica works towards (or keeps) a confirmed sync. */
export function isActive(state: SyncState): boolean {
  return state !== 'none' && state !== 'failed';
}
