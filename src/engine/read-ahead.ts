// Which cold reads stream, per volume (issue 14): read-ahead follows
// detected sequential streams, as the kernel's readahead does, instead of
// being set off by a request's size. A boot reads little and scattered (the
// guest's own readahead makes its reads 128 KiB, which must not fetch whole
// objects); a copy reads a lot in order.
//
// A stream is a run of reads each starting where the one before ended (within
// a reorder slack: an initiator with many commands in flight has them arrive
// a little out of order), or anywhere in what was read ahead of it: those
// reads find their blocks local and are not seen here, so the next one seen
// is where the local blocks end. Its read-ahead starts at its third read and covers
// as much beyond the stream's end as the stream has read so far, up to a
// maximum: the longer a reader has gone on in order, the likelier it goes on,
// and a stream that stops has fetched at most as much again as it read.

/** Streams followed per volume (a new one replaces the one used least recently). */
const STREAMS = 8;
/** Sequential reads before a stream is read ahead of. */
const HITS_BEFORE_AHEAD = 2;

interface Stream {
  /** Where it began, and where its last read ended. */
  start: number;
  next: number;
  hits: number;
  /** How far read-ahead has been asked for. */
  aheadEnd: number;
  used: number;
}

export class StreamDetector {
  private readonly streams: Stream[] = [];
  private tick = 0;

  constructor(
    /** The most a stream is read ahead of (bytes). */
    private readonly maxAhead: number,
    /** The volume's size: nothing is read ahead past it. */
    private readonly size: number,
    /** Read-ahead ends on a multiple of this (the object size). */
    private readonly unit = 1,
  ) {}

  /**
   * Notes a read that goes to the store; returns the range to fetch ahead of
   * it, [start, end), or null when the read is not (yet) part of a stream.
   */
  onRead(offset: number, length: number): { start: number; end: number } | null {
    const end = offset + length;
    const slack = Math.max(16 * length, 1024 * 1024);
    this.tick++;
    // The reads it fetched ahead are served from local blocks (by bs_swift itself): the reader's next
    // read seen here may come from anywhere up to the end of what was read ahead.
    const gap = Math.max(length, 64 * 1024);
    let s: Stream | undefined;
    let best = Infinity;
    for (const x of this.streams) {
      if (offset < x.next - slack || offset > Math.max(x.next, x.aheadEnd) + gap) continue;
      // the closest continuation; of equals, the longer stream
      const distance = Math.abs(offset - x.next) - (x.next - x.start) / 2 ** 40;
      if (distance < best) {
        best = distance;
        s = x;
      }
    }
    if (!s) {
      const fresh: Stream = { start: offset, next: end, hits: 0, aheadEnd: end, used: this.tick };
      if (this.streams.length < STREAMS) this.streams.push(fresh);
      else {
        let lru = 0;
        for (let i = 1; i < this.streams.length; i++) if (this.streams[i]!.used < this.streams[lru]!.used) lru = i;
        this.streams[lru] = fresh;
      }
      return null;
    }
    s.used = this.tick;
    if (end <= s.next) return null; // a late one of reads already counted
    s.next = end;
    s.hits++;
    // a stream that caught up with another (it began inside this one's reach) is this one now
    for (let i = this.streams.length - 1; i >= 0; i--) {
      const x = this.streams[i]!;
      if (x !== s && x.start >= s.start && x.next <= s.next) this.streams.splice(i, 1);
    }
    if (s.hits < HITS_BEFORE_AHEAD) return null;
    const window = Math.min(this.maxAhead, s.next - s.start);
    // Asked for in large steps, as the kernel does: again once half the window is used up, then
    // up to a whole unit's boundary: large GETs (whole objects) cost the store less per byte.
    if (s.aheadEnd - s.next >= window / 2) return null;
    // (to a unit's boundary only once the window spans a unit: a short stream must not fetch a whole object)
    const reach = s.next + window;
    const target = Math.min(this.size, window >= this.unit ? Math.ceil(reach / this.unit) * this.unit : reach);
    const from = Math.max(s.aheadEnd, end);
    if (target <= from) return null;
    s.aheadEnd = target;
    return { start: from, end: target };
  }
}
