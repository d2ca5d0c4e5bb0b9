// Makes the compiled CLI executable and copies the .proto files next to the compiled code,
// so `dist/` runs on its own (the gRPC service loads its schema at run time).
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..');
const main = path.join(root, 'dist/src/main.js');
if (fs.existsSync(main)) fs.chmodSync(main, 0o755);
fs.cpSync(path.join(root, 'proto'), path.join(root, 'dist/proto'), { recursive: true });
