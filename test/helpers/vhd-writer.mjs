// Writes to a VHD forever, for the kill -9 test: whole-sector writes of self-describing
// sectors (cookie, sector number, generation, a pattern derived from both), printing the
// generation after each write, until it is killed. Usage: vhd-writer.mjs PATH SEED
import { VirtualDisk } from '../../dist/index.js';

const [path, seedText] = process.argv.slice(2);
let seed = Number(seedText) >>> 0 || 1;
const random = () => {
  // xorshift32: reproducible from the seed
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed / 0x100000000;
};

/** Sector `n` as written in generation `gen`. */
function stamp(n, gen) {
  const b = Buffer.alloc(512);
  b.write('XNOD', 0, 'latin1');
  b.writeUInt32BE(n, 4);
  b.writeUInt32BE(gen, 8);
  for (let i = 12; i < 512; i++) b[i] = (n * 7 + gen * 13 + i) & 0xff;
  return b;
}

const disk = await VirtualDisk.open(path);
const sectors = disk.size / 512;
let gen = Number(process.env.GENERATION ?? 1);
for (;;) {
  // Runs of 1 to 64 sectors: small overwrites, and new blocks as the disk fills.
  const count = 1 + Math.floor(random() * 64);
  const first = Math.floor(random() * (sectors - count));
  const data = Buffer.concat(Array.from({ length: count }, (_, i) => stamp(first + i, gen)));
  await disk.write(first * 512, data);
  if (random() < 0.1) await disk.flush();
  process.stdout.write(`${gen}\n`);
  gen++;
}
