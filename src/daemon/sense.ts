// SCSI sense data the daemon answers with (doc/protocol.md, "Status and
// sense data"): sense keys, the table of the situations the daemon reports,
// and SenseError, by which a device chooses its own sense.

export const SenseKey = {
  NO_SENSE: 0x00,
  RECOVERED_ERROR: 0x01,
  NOT_READY: 0x02,
  MEDIUM_ERROR: 0x03,
  HARDWARE_ERROR: 0x04,
  ILLEGAL_REQUEST: 0x05,
  UNIT_ATTENTION: 0x06,
  DATA_PROTECT: 0x07,
  ABORTED_COMMAND: 0x0b,
  MISCOMPARE: 0x0e,
} as const;

export interface Sense {
  key: number;
  asc: number;
  ascq: number;
}

/** Sense data the daemon uses. */
export const Senses = {
  /** MEDIUM ERROR, UNRECOVERED READ ERROR */
  READ_ERROR: { key: SenseKey.MEDIUM_ERROR, asc: 0x11, ascq: 0x00 },
  /** MEDIUM ERROR, WRITE ERROR */
  WRITE_ERROR: { key: SenseKey.MEDIUM_ERROR, asc: 0x0c, ascq: 0x00 },
  /** MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION */
  MISCOMPARE: { key: SenseKey.MISCOMPARE, asc: 0x1d, ascq: 0x00 },
  /** HARDWARE ERROR, INTERNAL TARGET FAILURE */
  INTERNAL: { key: SenseKey.HARDWARE_ERROR, asc: 0x44, ascq: 0x00 },
  /** NOT READY, LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE */
  NOT_READY: { key: SenseKey.NOT_READY, asc: 0x04, ascq: 0x00 },
  /** DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT */
  NO_SPACE: { key: SenseKey.DATA_PROTECT, asc: 0x27, ascq: 0x07 },
  /** DATA PROTECT, WRITE PROTECTED */
  WRITE_PROTECTED: { key: SenseKey.DATA_PROTECT, asc: 0x27, ascq: 0x00 },
  /** ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE */
  LBA_OUT_OF_RANGE: { key: SenseKey.ILLEGAL_REQUEST, asc: 0x21, ascq: 0x00 },
  /** ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE */
  INVALID_OPCODE: { key: SenseKey.ILLEGAL_REQUEST, asc: 0x20, ascq: 0x00 },
  /** ILLEGAL REQUEST, INVALID FIELD IN CDB */
  INVALID_FIELD: { key: SenseKey.ILLEGAL_REQUEST, asc: 0x24, ascq: 0x00 },
} as const satisfies Record<string, Sense>;

/**
 * An error that carries its own sense data: a BlockDevice (or openDevice)
 * may throw it to choose what the initiator sees.
 */
export class SenseError extends Error {
  readonly sense: Sense;
  constructor(sense: Sense, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SenseError';
    this.sense = sense;
  }
}
