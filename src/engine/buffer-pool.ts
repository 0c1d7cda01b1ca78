/**
 * A fixed set of equal buffers for uploads, reused rather than allocated per
 * object: a fresh 8 MiB buffer costs page faults on first touch and adds to
 * the external memory that makes V8 collect garbage.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];
  private readonly waiting: Array<(b: Buffer) => void> = [];

  constructor(count: number, readonly size: number) {
    for (let i = 0; i < count; i++) this.free.push(Buffer.allocUnsafeSlow(size));
  }

  /** A buffer of `length` bytes (at most size, content undefined); waits while all are in use. */
  async take(length: number): Promise<Buffer> {
    const buffer = this.free.pop() ?? (await new Promise<Buffer>((resolve) => this.waiting.push(resolve)));
    return buffer.subarray(0, length);
  }

  give(view: Buffer): void {
    const whole = Buffer.from(view.buffer, 0, this.size);
    const next = this.waiting.shift();
    if (next) next(whole);
    else this.free.push(whole);
  }
}
