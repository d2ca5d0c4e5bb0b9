/**
 * The proxy's own replication commands inside MULTI (transaction-exec.ts) and the role check at
 * EXEC, on real nodes behind real proxy processes. A transaction queued while the proxy is a
 * master and EXEC'd after another client turned it into a replica must not read the node's
 * unconfirmed data nor write to it (DESIGN.md invariant 4): EXEC is refused as a whole, as Redis
 * refuses it on a stale replica (MASTERDOWN) or a read-only one (READONLY).
 */
import { expect } from 'chai';
import { NODE_KINDS } from './helpers/nodes';
import { freePort } from './helpers/ports';
import { RespClient } from './helpers/resp-client';
import { Cleanup } from './replica-e2e-fixture';

for (const kind of NODE_KINDS) {
  describe(`${kind}: replication commands inside MULTI and the role at EXEC`, function () {
    this.timeout(120_000);
    let cleanup: Cleanup;

    beforeEach(() => {
      cleanup = new Cleanup();
    });

    afterEach(async () => {
      await cleanup.run();
    });

    /** A node behind a proxy, a client through it, one straight to the node, and a port nothing listens on. */
    async function setUp(): Promise<{ c: RespClient; other: RespClient; node: RespClient; deadPort: string }> {
      const testNode = await cleanup.node(kind);
      const proxy = await cleanup.proxy(testNode, ['--sync-retry-base-ms', '100', '--sync-max-attempts', '3']);
      const connect = async (port: number): Promise<RespClient> => cleanup.add(await RespClient.connect(port), (x) => x.close());
      return { c: await connect(proxy.port), other: await connect(proxy.port), node: await connect(testNode.port), deadPort: String(await freePort()) };
    }

    it('REPLICAOF inside MULTI: the node commands run as one transaction as the master it was, the proxy commands after them in order; EXEC answers each', async () => {
      const { c, node, deadPort } = await setUp();
      expect(await c.text('MULTI')).to.equal('+OK\r\n');
      for (const cmd of [['SET', 'foo2', 'bar'], ['ROLE'], ['REPLICAOF', '127.0.0.1', deadPort], ['SET', 'foo3', 'bar'], ['GET', 'foo2'], ['PING'], ['INFO', 'replication']]) {
        expect(await c.text(...cmd), cmd.join(' ')).to.equal('+QUEUED\r\n');
      }
      const exec = await c.text('EXEC');
      const parts = [
        /^\*7\r\n/,
        /^\+OK\r\n/, // SET foo2
        /^\*3\r\n\$6\r\nmaster\r\n:\d+\r\n\*0\r\n/, // ROLE, queued before REPLICAOF
        /^\+OK\r\n/, // REPLICAOF
        /^\+OK\r\n/, // SET foo3: run as the master the proxy was at EXEC, as Redis runs it
        /^\$3\r\nbar\r\n/,
        /^\+PONG\r\n/,
        /^\$\d+\r\n# Replication\r\nrole:slave\r\nmaster_host:127\.0\.0\.1\r\nmaster_port:\d+\r\n[\s\S]*$/, // INFO, queued after it
      ];
      let rest = exec;
      for (const part of parts) {
        const m = part.exec(rest);
        expect(m, `${String(part)} at ${JSON.stringify(rest.slice(0, 120))}`).to.not.equal(null);
        rest = rest.slice(m![0].length);
      }
      expect(await node.text('GET', 'foo3')).to.equal('$3\r\nbar\r\n');
      expect(await node.text('GET', 'foo2')).to.equal('$3\r\nbar\r\n');
      expect(await c.text('SET', 'foo4', 'bar')).to.equal("-READONLY You can't write against a read only replica.\r\n");
      expect(await c.text('REPLICAOF', 'NO', 'ONE')).to.equal('+OK\r\n');
      expect(await c.text('GET', 'foo2')).to.equal('$3\r\nbar\r\n');
      // A transaction of proxy commands only never reaches the node.
      await c.call('MULTI');
      await c.call('ROLE');
      await c.call('WAIT', '0', '0');
      expect(await c.text('EXEC')).to.match(/^\*2\r\n\*3\r\n\$6\r\nmaster\r\n:\d+\r\n\*0\r\n:0\r\n$/);
    });

    it('an EXEC after another client made the proxy a replica is refused as a whole: MASTERDOWN for reads (PING too), READONLY for writes', async () => {
      const { c, other, node, deadPort } = await setUp();
      await node.call('SET', 'xx', '1');
      expect(await c.text('MULTI')).to.equal('+OK\r\n');
      expect(await c.text('GET', 'xx')).to.equal('+QUEUED\r\n');
      expect(await other.text('REPLICAOF', 'localhost', deadPort)).to.equal('+OK\r\n');
      expect(await c.text('EXEC')).to.match(/^-EXECABORT Transaction discarded because of: MASTERDOWN [^\r]+\r\n$/);

      // MULTI itself is allowed on the unconfirmed replica; a PING queued there is refused at
      // once, as Redis with replica-serve-stale-data no refuses it.
      expect(await c.text('MULTI')).to.equal('+OK\r\n');
      expect(await c.text('PING')).to.match(/^-MASTERDOWN /);
      expect(await c.text('EXEC')).to.equal('-EXECABORT Transaction discarded because of previous errors.\r\n');
      // Queued on a master, EXEC'd on the unconfirmed replica: the PING is refused with the rest.
      expect(await other.text('REPLICAOF', 'NO', 'ONE')).to.equal('+OK\r\n');
      expect(await c.text('MULTI')).to.equal('+OK\r\n');
      expect(await c.text('PING')).to.equal('+QUEUED\r\n');
      expect(await other.text('REPLICAOF', 'localhost', deadPort)).to.equal('+OK\r\n');
      expect(await c.text('EXEC')).to.match(/^-EXECABORT Transaction discarded because of: MASTERDOWN /);

      expect(await other.text('REPLICAOF', 'NO', 'ONE')).to.equal('+OK\r\n');
      expect(await c.text('MULTI')).to.equal('+OK\r\n');
      expect(await c.text('INCR', 'xx')).to.equal('+QUEUED\r\n');
      expect(await other.text('REPLICAOF', 'localhost', deadPort)).to.equal('+OK\r\n');
      expect(await c.text('EXEC')).to.equal("-EXECABORT Transaction discarded because of: READONLY You can't write against a read only replica.\r\n");
      expect(await node.text('GET', 'xx')).to.equal('$1\r\n1\r\n');

      // Queued on the replica, EXEC'd after it became a master again: runs.
      expect(await c.text('MULTI')).to.equal('+OK\r\n');
      expect(await other.text('REPLICAOF', 'NO', 'ONE')).to.equal('+OK\r\n');
      expect(await c.text('GET', 'xx')).to.equal('+QUEUED\r\n');
      expect(await c.text('EXEC')).to.equal('*1\r\n$1\r\n1\r\n');
    });
  });
}
