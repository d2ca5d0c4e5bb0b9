// Makes `npm run demo` and `npm test` work on a fresh clone of a fresh Debian machine: installs
// the npm dependencies (npm ci) when node_modules is missing, and redis-server/redis-tools and
// libunwind8 (the real Pika 4.0.1 build in ../shared/pika needs it) from Debian's packages when
// they are missing (as root). Plain Node, no dependencies: it runs before
// anything is installed.
const { execSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');
const run = (cmd) => execSync(cmd, { cwd: root, stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
const has = (bin) => {
  try {
    execSync(`command -v ${bin}`, { stdio: 'ignore', shell: '/bin/sh' });
    return true;
  } catch {
    return false;
  }
};

if (!has('redis-server') || !has('redis-cli')) {
  if (typeof process.getuid === 'function' && process.getuid() === 0) {
    console.log('setup: installing redis-server and redis-tools (Debian packages)');
    run('apt-get update </dev/null');
    run('apt-get install -y --no-install-recommends redis-server redis-tools </dev/null');
    // The package starts a service on 6379; nothing here uses it.
    try {
      run('service redis-server stop </dev/null >/dev/null 2>&1');
    } catch {
      /* no service manager: nothing was started */
    }
  } else {
    console.error('setup: redis-server is missing; install it with: sudo apt-get install -y redis-server redis-tools');
    process.exit(1);
  }
}

const hasLibunwind = () => {
  try {
    return /libunwind\.so\.8/.test(execSync('ldconfig -p', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
  } catch {
    return false;
  }
};
if (!hasLibunwind()) {
  if (typeof process.getuid === 'function' && process.getuid() === 0) {
    console.log('setup: installing libunwind8 (Debian package; the Pika build in ../shared/pika needs it)');
    run('apt-get update </dev/null');
    run('apt-get install -y --no-install-recommends libunwind8 </dev/null');
  } else {
    console.error('setup: libunwind8 is missing (the Pika tests need it); install it with: sudo apt-get install -y libunwind8');
    process.exit(1);
  }
}

if (!fs.existsSync(path.join(root, 'node_modules', '.package-lock.json'))) {
  console.log('setup: installing npm dependencies (npm ci)');
  run('npm ci --no-audit --no-fund </dev/null');
}
