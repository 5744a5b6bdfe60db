// The mock xenstored, alone in its process, for bench/xenstore.mjs:
//   node bench/xenstore-server.mjs <socket-path>
// Prints "ready" once the socket accepts connections; exits when stdin closes (the
// benchmark ended or died) or on SIGTERM.
import { XenStoreEngine } from '../dist/xenstore/engine.js';
import { XenStoreServer } from '../dist/xenstore/server.js';

const socketPath = process.argv[2];
if (!socketPath) {
  console.error('usage: node bench/xenstore-server.mjs <socket-path>');
  process.exit(2);
}

const server = new XenStoreServer(new XenStoreEngine());
await server.listen(socketPath);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  await server.close();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.resume();
process.stdout.write('ready\n');
