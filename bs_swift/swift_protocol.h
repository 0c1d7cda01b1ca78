/*
 * The bs_swift <-> daemon wire format, version 1 (doc/protocol.md): the one
 * source of the protocol's constants and of the block map's layout.
 *
 * bs_swift.c includes this file. The daemon (TypeScript) keeps its own
 * copies, in src/daemon/protocol.ts and src/overlay/direct-map.ts;
 * test/wire-constants.test.ts parses the #define lines below and checks that
 * every one equals its TypeScript counterpart, and that none is missing.
 * Keep to that form: one "#define NAME VALUE" per line, VALUE an integer
 * (decimal or hex, U suffix allowed) or a simple expression of them
 * ("(32U << 20)"); a constant added here needs its TypeScript side and an
 * entry in the test.
 *
 * This program is free software; you can redistribute it and/or
 * modify it under the terms of the GNU General Public License as
 * published by the Free Software Foundation, version 2 of the
 * License.
 */
#ifndef SWIFT_PROTOCOL_H
#define SWIFT_PROTOCOL_H

/* ---- framing ---- */

#define SWP_MAGIC		0x42565753U	/* "SWVB" on the wire */
#define SWP_VERSION		1
#define SWP_HDR_LEN		40
#define SWP_MAX_PAYLOAD		(32U << 20)
#define SWP_MIN_PAYLOAD		(64U << 10)	/* least a daemon advertises */
#define SWP_MAX_NAME		255
#define SWP_MAX_MESSAGE		1024
#define SWP_HELLO_REPLY_LEN	24
#define SWP_ALIGN		512
/* largest physical block size (HELLO) and WRITE SAME block */
#define SWP_MAX_BLOCK		(64U << 10)

#define SWP_OP_HELLO		0x01
#define SWP_OP_READ		0x02
#define SWP_OP_WRITE		0x03
#define SWP_OP_FLUSH		0x04
#define SWP_OP_UNMAP		0x05
#define SWP_OP_WRITE_SAME	0x06
#define SWP_OP_COMPARE_AND_WRITE 0x07
#define SWP_OP_VERIFY		0x08
#define SWP_OP_PREFETCH		0x09
#define SWP_OP_DIRECT		0x0A
#define SWP_REPLY		0x80	/* reply opcode = request opcode | this */

/* handshake capabilities: bit n = opcode n; features above them */
#define SWP_CAP_PARTIAL_SECTOR	(1U << 16)	/* WRITE/VERIFY may end inside a sector */
#define SWP_CAP_DEFERRED_OPEN	(1U << 17)	/* volume opened at the first command: DIRECT after it */

#define SWP_F_FUA		0x0001	/* WRITE, WRITE_SAME, COMPARE_AND_WRITE */
#define SWP_F_UNMAP		0x0002	/* WRITE_SAME */
#define SWP_F_LBDATA		0x0004	/* WRITE_SAME */
#define SWP_F_PBDATA		0x0008	/* WRITE_SAME */
#define SWP_RF_INFO_VALID	0x0001	/* reply: offset is the INFORMATION field */

#define SWP_STATUS_GOOD		0x00
#define SWP_STATUS_CHECK_CONDITION 0x02

/* ---- direct I/O ---- */

#define SWP_DIRECT_VERSION	1	/* DIRECT reply: map version */
#define SWP_MAX_PATH		4095

/* the shared block map a DIRECT reply names: its header, little-endian */
#define SWM_MAGIC		0x4D565753U	/* "SWVM" */
#define SWM_VERSION		1
#define SWM_HDR_LEN		80

#define SWM_OFF_MAGIC		0	/* u32 */
#define SWM_OFF_VERSION		4	/* u32 */
#define SWM_OFF_SIZE		8	/* u64: volume size in bytes */
#define SWM_OFF_BLOCK_SIZE	16	/* u32 */
#define SWM_OFF_OBJECT_SIZE	20	/* u32: chunk size */
#define SWM_OFF_CHUNKS		24	/* u64 */
#define SWM_OFF_INFLIGHT	32	/* u32: direct writes in progress */
#define SWM_OFF_ALLOW		40	/* u64: offset of allow, 1 byte a chunk */
#define SWM_OFF_TOUCHED		48	/* u64: offset of touched, 1 byte a chunk */
#define SWM_OFF_VALID		56	/* u64: offset of valid, 1 bit a block */
#define SWM_OFF_DIRTY		64	/* u64: offset of dirty, 1 bit a block */
#define SWM_OFF_LENGTH		72	/* u64: length of the map file */
/* counters of bs_swift's direct I/O, u64 each, atomic adds (in the header's
 * page after SWM_HDR_LEN: a daemon that does not read them leaves them 0) */
#define SWM_OFF_READ_OPS	80
#define SWM_OFF_READ_BYTES	88
#define SWM_OFF_WRITE_OPS	96
#define SWM_OFF_WRITE_BYTES	104

#endif /* SWIFT_PROTOCOL_H */
