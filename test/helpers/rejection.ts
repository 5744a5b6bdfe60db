/**
 * What `p` rejects with, for tests that inspect the error itself (its class, code and
 * fields) rather than only its code. Throws when `p` fulfils.
 */
export async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}
