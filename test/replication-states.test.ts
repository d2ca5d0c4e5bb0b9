import { expect } from 'chai';
import { SyncProxyError } from '../src/errors';
import { silentLogger } from '../src/logger';
import { newReplicaStatus, readGateText } from '../src/replication/replica-status';
import { SYNC_STATES, SyncStateMachine, TRANSITIONS } from '../src/replication/states';

describe('replication state machine', () => {
  it('walks the happy path and records every phase with its reason and duration', () => {
    const m = new SyncStateMachine(silentLogger());
    const seen: string[] = [];
    m.onTransition((from, to) => seen.push(`${from}>${to}`));
    for (const s of ['connecting', 'fetching_meta', 'copying', 'verifying', 'loading', 'catching_up', 'streaming'] as const) m.transition(s, `to ${s}`);
    expect(m.state).to.equal('streaming');
    expect(seen[0]).to.equal('none>connecting');
    expect(m.phases.map((p) => p.state)).to.deep.equal(['none', 'connecting', 'fetching_meta', 'copying', 'verifying', 'loading', 'catching_up', 'streaming']);
    expect(m.phases.slice(0, -1).every((p) => typeof p.durationMs === 'number' && p.endedAtMs !== undefined)).to.equal(true);
    expect(m.phases[3].reason).to.equal('to copying');
    expect(m.phases[m.phases.length - 1].endedAtMs).to.equal(undefined);
  });

  it('refuses every transition outside the table with INTERNAL and stays in place', () => {
    let refused = 0;
    for (const from of SYNC_STATES) {
      for (const to of SYNC_STATES) {
        if (TRANSITIONS[from].includes(to)) continue;
        const m = new SyncStateMachine(silentLogger());
        // reach `from` along allowed edges
        const path: Record<string, string[]> = {
          none: [], connecting: ['connecting'], fetching_meta: ['connecting', 'fetching_meta'], copying: ['connecting', 'fetching_meta', 'copying'],
          verifying: ['connecting', 'fetching_meta', 'copying', 'verifying'], loading: ['connecting', 'fetching_meta', 'copying', 'verifying', 'loading'],
          catching_up: ['connecting', 'catching_up'], streaming: ['connecting', 'catching_up', 'streaming'], backoff: ['connecting', 'backoff'], failed: ['connecting', 'failed'],
        };
        for (const s of path[from]) m.transition(s as never, 'setup');
        expect(m.state).to.equal(from);
        const err = (() => {
          try {
            m.transition(to, 'illegal');
          } catch (e) {
            return e;
          }
          return undefined;
        })();
        expect(err, `${from} -> ${to}`).to.be.instanceOf(SyncProxyError);
        expect((err as SyncProxyError).code).to.equal('INTERNAL');
        expect(m.state).to.equal(from);
        refused++;
      }
    }
    expect(refused).to.be.greaterThan(50);
  });

  it('never lets reads through before confirmation; after it, follows replica-serve-stale-data', () => {
    const m = new SyncStateMachine(silentLogger());
    const status = newReplicaStatus('10.0.0.1', 7379, 5);
    m.transition('connecting', 't');
    m.transition('fetching_meta', 't');
    m.transition('copying', 't');
    status.attempt = 2;
    Object.assign(status.copy, { bytesTotal: 27.1 * 1024 * 1024, bytesDone: Math.round(27.1 * 1024 * 1024 * 0.455), filesTotal: 6, filesDone: 3 });
    expect(readGateText(m, status, true)).to.equal('MASTERDOWN full sync not confirmed: copying 45% (12.3MB/27.1MB, files 3/6, attempt 2/5)');
    for (const s of ['verifying', 'loading', 'catching_up', 'streaming'] as const) {
      m.transition(s, 't');
      expect(readGateText(m, status, true), s).to.match(/^MASTERDOWN full sync not confirmed: /);
    }
    status.confirmed = true;
    expect(readGateText(m, status, false)).to.equal(null);
    m.transition('backoff', 'link lost');
    expect(readGateText(m, status, true)).to.equal(null);
    expect(readGateText(m, status, false)).to.equal("MASTERDOWN link with master is down and replica-serve-stale-data is set to 'no'");
    status.history.record(new SyncProxyError('MASTER_UNREACHABLE', 'connect ECONNREFUSED'));
    status.lastError = status.history.last;
    m.transition('failed', 'gave up');
    expect(readGateText(m, status, true)).to.equal('MASTERDOWN full sync failed after 1 attempt: MASTER_UNREACHABLE: connect ECONNREFUSED');
  });
});
