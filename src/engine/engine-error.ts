// A failure to report to the user as it is: the message is the whole story
// (a volume that does not exist, an image that cannot be read, a lock held).
export class EngineError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'EngineError';
  }
}

/** "volume 'a' is not exported", "volumes 'a', 'b' are not exported": what a batch of changes says of the names it refuses. */
export function volumesMessage(names: readonly string[], one: string, many: string): string {
  return `${names.length === 1 ? 'volume' : 'volumes'} ${names.map((n) => `'${n}'`).join(', ')} ${names.length === 1 ? one : many}`;
}
