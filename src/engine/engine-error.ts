// A failure to report to the user as it is: the message is the whole story
// (a volume that does not exist, an image that cannot be read, a lock held).
export class EngineError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'EngineError';
  }
}
