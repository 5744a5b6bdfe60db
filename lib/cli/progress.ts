/**
 * A one-line progress bar for long disk work, drawn on a terminal only: on anything else
 * (a pipe, a file, CI logs) it draws nothing, so output stays clean. Redraws at most ten
 * times a second.
 */
export interface ProgressBar {
  /** Sets how much of `total` is done. */
  update(done: number): void;
  /** Erases the bar. */
  end(): void;
}

const NO_BAR: ProgressBar = { update: () => undefined, end: () => undefined };

/** A stream that may be a terminal, as process.stderr is. */
export interface MaybeTty {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

/** Formats a byte count with a binary unit: `1.5 GiB`. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

/**
 * A bar labelled `label` for `total` units on `stream` when it is a terminal and `enabled`;
 * `unit: 'bytes'` shows amounts as sizes.
 */
export function progressBar(stream: MaybeTty, label: string, total: number, options: { enabled?: boolean; unit?: 'bytes' | 'items' } = {}): ProgressBar {
  if (options.enabled === false || !stream.isTTY) return NO_BAR;
  const show = (n: number) => (options.unit === 'bytes' ? formatBytes(n) : String(n));
  let last = 0;
  let drawn = false;
  const draw = (done: number) => {
    const fraction = total > 0 ? Math.min(done / total, 1) : 1;
    const tail = ` ${Math.floor(fraction * 100)}% ${show(done)}/${show(total)}`;
    const width = Math.max(10, Math.min(40, (stream.columns ?? 80) - label.length - tail.length - 4));
    const filled = Math.round(fraction * width);
    stream.write(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}]${tail}\x1b[K`);
    drawn = true;
  };
  return {
    update(done) {
      const now = Date.now();
      if (done < total && now - last < 100) return;
      last = now;
      draw(done);
    },
    end() {
      if (drawn) stream.write('\r\x1b[K');
    },
  };
}
