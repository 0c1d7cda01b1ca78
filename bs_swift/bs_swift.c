/*
 * bs_swift: tgt backing store that forwards block I/O to the swiftvol daemon
 *
 * The LU's data lives behind a Unix socket: every command is turned into a
 * message of the bs_swift protocol (doc/protocol.md, version 1) and the
 * daemon's reply is turned into SCSI status and sense data. Request handling
 * follows bs_rdwr.c's bs_rdwr_request(): the same opcodes, the same sense
 * codes in the same situations, with pread/pwrite/fdatasync/fallocate
 * replaced by messages to the daemon.
 *
 *   tgtadm --mode logicalunit --op new ... --bstype swift \
 *          --backing-store VOLUME --bsopts "socket=/run/swiftvol/bs.sock;timeout=20"
 *
 * Concurrency: requests run on one pool of worker threads shared by every
 * swift LU of the tgtd (nr_iothreads, 16 by default, whatever the number of
 * LUs: bs_thread would start that many per LU), and come back to tgtd's main
 * loop through an eventfd, as bs_aio's do. Each LU keeps one connection to
 * the daemon for its commands, shared by the workers: requests are
 * pipelined on it (each sent whole under a send lock) and replies, which
 * come in any order, are read by whichever waiting worker holds the reader
 * role and handed to their waiters by tag (struct swift_mux). tgtd's main
 * loop never waits on the daemon.
 *
 * Direct I/O: when the daemon offers it (DIRECT), bs_swift maps the
 * volume's shared block map and opens its overlay file, and serves READs of
 * blocks that are local, and WRITEs (without FUA) that only overwrite local
 * blocks of chunks no snapshot is reading, with pread/pwrite itself,
 * recording the written blocks as dirty in the map for the daemon to
 * collect. Everything else goes to the daemon. Direct I/O lasts as long as
 * the connection that opened the session: when the daemon closes it (it
 * stopped or died), bs_swift stops direct I/O before the next command, so a
 * daemon's absence is seen as before.
 *
 * Daemon loss: every send/recv/connect has a time limit (timeout=, seconds),
 * and so has each request's wait for its reply; a connection that fails is
 * closed and every command waiting on it gets CHECK CONDITION, and a later
 * command connects again. A request whose reply is late fails alone: its
 * reply is recognised by its tag and discarded when it comes. A connection
 * found dead before anything was sent on it (the daemon restarted) is
 * dropped and the request is retried once on a new connection.
 *
 * Sense data when the daemon cannot answer:
 *   cannot connect (no socket, refused, handshake refused) NOT READY 04/00
 *   connection lost during a command                   HARDWARE ERROR 08/00
 *   no reply within timeout                            HARDWARE ERROR 08/01
 *   reply that breaks the protocol, no memory          HARDWARE ERROR 44/00
 * Sense data the daemon decides (read error 11/00, write error 0c/00,
 * miscompare 1d/00 with the offset in the information field ...) is passed on
 * as is.
 *
 * This program is free software; you can redistribute it and/or
 * modify it under the terms of the GNU General Public License as
 * published by the Free Software Foundation, version 2 of the
 * License.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "list.h"
#include "util.h"
#include "tgtd.h"
#include "scsi.h"
#include "spc.h"

/* the wire format (doc/protocol.md), shared with the daemon */
#include "swift_protocol.h"

#define DEFAULT_SOCKET		"/run/swiftvol/bs.sock"
#define DEFAULT_TIMEOUT_MS	20000

/* result of an exchange with the daemon */
enum swx {
	SWX_OK = 0,
	SWX_UNREACHABLE,	/* connect or handshake failed */
	SWX_REFUSED,		/* handshake answered with an error: see res */
	SWX_LOST,		/* connection closed or reset */
	SWX_TIMEOUT,		/* no progress within the timeout */
	SWX_PROTO,		/* the daemon broke the protocol */
	SWX_NOMEM,
};

struct swift_res {
	uint8_t status;
	uint8_t key;
	uint16_t asc;		/* asc << 8 | ascq, as sense_data_build wants */
	uint16_t flags;
	uint64_t info;
};

/* A request sent on a LU's connection, waiting for its reply. */
enum swift_wait_state {
	SWW_WAITING,		/* reply not in */
	SWW_RECEIVING,		/* the reader is receiving its payload */
	SWW_DONE,		/* x and res hold the outcome */
};

struct swift_wait {
	uint64_t tag;
	uint8_t op;
	void *in;		/* a GOOD reply's payload: exactly in_len bytes */
	uint32_t in_len;
	enum swift_wait_state state;
	int abandoned;		/* its worker timed out: the reader drains and frees it */
	enum swx x;
	struct swift_res res;
	pthread_cond_t cond;	/* signalled when done, or to take over reading */
	struct swift_wait *next;
};

/*
 * A LU's connection, shared by the workers running its commands (the
 * protocol lets requests be pipelined and replies come in any order). A
 * worker registers its request, sends it whole under send_lock, then waits;
 * one waiting worker at a time reads replies and hands each to its waiter,
 * until its own is in, and then passes the role on. Freed when the last
 * reference goes, so no thread ever uses a closed fd.
 */
struct swift_mux {
	int fd;
	int refs;		/* the LU's, and each worker's using it */
	enum swx broken;	/* SWX_OK while usable */
	int reading;		/* a worker holds the reader role */
	pthread_mutex_t send_lock;
	struct swift_wait *waiting;	/* replies not yet in (and abandoned ones) */
};

struct swift_direct {
	int watch_fd;		/* the session's connection: closed = daemon gone */
	int data_fd;		/* the overlay file */
	uint8_t *map;
	size_t map_len;
	uint32_t *inflight;
	uint64_t *read_ops, *read_bytes, *write_ops, *write_bytes;
	uint8_t *allow;		/* per chunk: direct writes allowed */
	uint8_t *touched;	/* per chunk: dirty bits set since collected */
	uint8_t *valid;		/* per block: the overlay file holds it */
	uint8_t *dirty;		/* per block: written directly */
	uint64_t chunks;
	unsigned block_shift;	/* log2 of the block size */
	unsigned chunk_shift;	/* log2 of blocks per chunk */
};

struct swift_lu {
	char volume[SWP_MAX_NAME + 1];
	char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int timeout_ms;

	/* from the handshake of bs_open */
	uint64_t size;
	uint32_t block_size;	/* physical block size: the daemon's granularity */
	uint32_t max_payload;
	uint32_t caps;

	/* read-held around each direct I/O; write-held to change direct, and
	 * by exclusive commands to wait for direct writes in progress */
	pthread_rwlock_t direct_lock;
	struct swift_direct *direct;	/* NULL: no direct I/O */
	int direct_wanted;	/* try DIRECT at the next good exchange */
	int exclusive;		/* exclusive commands in progress: no direct writes */

	pthread_mutex_t lock;	/* protects everything below, and the muxes' state */
	struct swift_mux *mux;	/* NULL: connect at the next command */
	int connecting;		/* a worker is connecting: the others wait */
	unsigned connect_gen;	/* connection attempts finished */
	enum swx connect_x;	/* how the last one ended */
	struct swift_res connect_res;
	pthread_cond_t connected;	/* a connection attempt finished */
	uint64_t next_tag;
	int down;		/* last exchange failed: log once per outage */
};

struct swift_req {
	uint8_t op;
	uint16_t flags;
	uint64_t offset;
	uint64_t length;
	struct iovec out[2];	/* payload, in up to two pieces */
	int nout;
	void *in;		/* READ: where the payload of a GOOD reply goes */
	uint32_t in_len;
};

static inline struct swift_lu *SWIFT_LU(struct scsi_lu *lu)
{
	return (struct swift_lu *)((char *)lu + sizeof(*lu));
}

static void put_le16(uint8_t *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, sizeof(v));
}

static void put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, sizeof(v));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, sizeof(v));
}

static uint16_t get_le16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return le16toh(v);
}

static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

static void swift_encode_hdr(uint8_t *h, uint8_t op, uint16_t flags,
			     uint64_t tag, uint64_t offset, uint64_t length,
			     uint32_t payload_len)
{
	memset(h, 0, SWP_HDR_LEN);
	put_le32(h, SWP_MAGIC);
	h[4] = SWP_VERSION;
	h[5] = op;
	put_le16(h + 6, flags);
	put_le64(h + 8, tag);
	put_le64(h + 16, offset);
	put_le64(h + 24, length);
	put_le32(h + 32, payload_len);
}

/* ---- socket helpers ---- */

static enum swx errno_to_swx(int err)
{
	if (err == EAGAIN || err == EWOULDBLOCK || err == ETIMEDOUT)
		return SWX_TIMEOUT;
	return SWX_LOST;
}

/* Sends hdr + iov; *sent counts the bytes that left. */
static enum swx swift_sendv(int fd, uint8_t *hdr, const struct iovec *out,
			    int nout, size_t *sent)
{
	struct iovec iov[3];
	struct msghdr msg;
	int n = 0, i;
	ssize_t r;

	iov[n].iov_base = hdr;
	iov[n++].iov_len = SWP_HDR_LEN;
	for (i = 0; i < nout; i++)
		if (out[i].iov_len)
			iov[n++] = out[i];

	*sent = 0;
	i = 0;
	while (i < n) {
		memset(&msg, 0, sizeof(msg));
		msg.msg_iov = &iov[i];
		msg.msg_iovlen = n - i;
		r = sendmsg(fd, &msg, MSG_NOSIGNAL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return errno_to_swx(errno);
		}
		*sent += r;
		while (i < n && (size_t)r >= iov[i].iov_len) {
			r -= iov[i].iov_len;
			i++;
		}
		if (i < n) {
			iov[i].iov_base = (char *)iov[i].iov_base + r;
			iov[i].iov_len -= r;
		}
	}
	return SWX_OK;
}

/* Receives len bytes; *got counts those that came (also on failure). */
static enum swx swift_recv_count(int fd, void *buf, size_t len, size_t *got)
{
	char *p = buf;
	ssize_t r;

	*got = 0;
	while (len) {
		r = recv(fd, p, len, MSG_WAITALL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return errno_to_swx(errno);
		}
		if (r == 0)
			return SWX_LOST;
		p += r;
		len -= r;
		*got += r;
	}
	return SWX_OK;
}

static enum swx swift_recv_full(int fd, void *buf, size_t len)
{
	size_t got;

	return swift_recv_count(fd, buf, len, &got);
}

/* Receives and throws away len bytes (the reply to an abandoned request). */
static enum swx swift_recv_discard(int fd, size_t len)
{
	char buf[16384];
	size_t n;
	enum swx x;

	while (len) {
		n = len < sizeof(buf) ? len : sizeof(buf);
		x = swift_recv_full(fd, buf, n);
		if (x)
			return x;
		len -= n;
	}
	return SWX_OK;
}

/* Whether h is a reply header of this protocol version. */
static int swift_reply_framed(const uint8_t *h)
{
	return get_le32(h) == SWP_MAGIC && h[4] == SWP_VERSION &&
		(h[5] & SWP_REPLY) &&
		(get_le16(h + 6) & ~SWP_RF_INFO_VALID) == 0;
}

/*
 * The rest of a reply to op whose header h has been received and matched:
 * on GOOD, a payload of exactly good_len bytes goes to good_buf (at most
 * good_len when got is not NULL, which receives the length; thrown away
 * when good_buf is NULL); an error reply may carry a message (logged).
 * Anything else breaks the protocol.
 */
static enum swx swift_reply_rest(struct swift_lu *s, int fd, const uint8_t *h,
				 uint8_t op, void *good_buf, uint32_t good_len,
				 uint32_t *got, struct swift_res *res)
{
	char msg[SWP_MAX_MESSAGE + 1];
	uint32_t plen = get_le32(h + 32);
	enum swx x;

	res->status = h[36];
	res->key = h[37];
	res->asc = (uint16_t)h[38] << 8 | h[39];
	res->flags = get_le16(h + 6);
	res->info = get_le64(h + 16);

	if (res->status == SWP_STATUS_GOOD) {
		if ((got ? plen > good_len : plen != good_len) ||
		    res->key || res->asc || res->flags ||
		    res->info || get_le64(h + 24)) {
			eprintf("bs_swift %s: bad GOOD reply (op %02x len %u)\n",
				s->volume, op, plen);
			return SWX_PROTO;
		}
		if (got)
			*got = plen;
		if (!plen)
			return SWX_OK;
		return good_buf ? swift_recv_full(fd, good_buf, plen) :
			swift_recv_discard(fd, plen);
	}

	if (res->status != SWP_STATUS_CHECK_CONDITION || res->key == 0 ||
	    res->key > MISCOMPARE || plen > SWP_MAX_MESSAGE ||
	    get_le64(h + 24)) {
		eprintf("bs_swift %s: bad error reply (op %02x status %02x "
			"key %02x len %u)\n", s->volume, op, res->status,
			res->key, plen);
		return SWX_PROTO;
	}
	if (plen) {
		x = swift_recv_full(fd, msg, plen);
		if (x)
			return x;
		msg[plen] = '\0';
		eprintf("bs_swift %s: daemon: op %02x: %s (sense %x/%04x)\n",
			s->volume, op, msg, res->key, res->asc);
	}
	return SWX_OK;
}

/* Receives the reply to (op, tag) on a connection of one exchange at a time. */
static enum swx swift_recv_reply(struct swift_lu *s, int fd, uint8_t op,
				 uint64_t tag, void *good_buf,
				 uint32_t good_len, uint32_t *got,
				 struct swift_res *res)
{
	uint8_t h[SWP_HDR_LEN];
	enum swx x;

	x = swift_recv_full(fd, h, sizeof(h));
	if (x)
		return x;
	if (!swift_reply_framed(h) || h[5] != (op | SWP_REPLY) ||
	    get_le64(h + 8) != tag) {
		eprintf("bs_swift %s: bad reply header (op %02x tag %" PRIu64
			")\n", s->volume, h[5], get_le64(h + 8));
		return SWX_PROTO;
	}
	return swift_reply_rest(s, fd, h, op, good_buf, good_len, got, res);
}

/* A normal mutex only fails on misuse: say so loudly if it ever does. */
static void swift_lock(struct swift_lu *s)
{
	int err = pthread_mutex_lock(&s->lock);

	if (err)
		eprintf("bs_swift: pthread_mutex_lock: %s\n", strerror(err));
}

static void swift_unlock(struct swift_lu *s)
{
	int err = pthread_mutex_unlock(&s->lock);

	if (err)
		eprintf("bs_swift: pthread_mutex_unlock: %s\n", strerror(err));
}

static uint64_t swift_tag(struct swift_lu *s)
{
	uint64_t tag;

	swift_lock(s);
	tag = ++s->next_tag;
	swift_unlock(s);
	return tag;
}

static void swift_set_down(struct swift_lu *s, int down, const char *why)
{
	int was;

	swift_lock(s);
	was = s->down;
	s->down = down;
	swift_unlock(s);

	if (down && !was)
		eprintf("bs_swift %s: daemon at %s unavailable: %s\n",
			s->volume, s->socket_path, why);
	else if (!down && was)
		eprintf("bs_swift %s: daemon at %s is back\n",
			s->volume, s->socket_path);
}

static const char *swx_name(enum swx x)
{
	switch (x) {
	case SWX_OK:
		return "ok";
	case SWX_UNREACHABLE:
		return "cannot connect";
	case SWX_REFUSED:
		return "handshake refused";
	case SWX_LOST:
		return "connection lost";
	case SWX_TIMEOUT:
		return "timed out";
	case SWX_PROTO:
		return "protocol error";
	case SWX_NOMEM:
		return "out of memory";
	}
	return "?";
}

/*
 * Opens a connection and performs the handshake. On success the daemon's
 * volume parameters are stored in *size etc. (when not NULL).
 */
static enum swx swift_connect(struct swift_lu *s, int *out_fd,
			      struct swift_res *res, uint64_t *size,
			      uint32_t *block_size, uint32_t *max_payload,
			      uint32_t *caps)
{
	struct sockaddr_un addr;
	struct timeval tv;
	uint8_t h[SWP_HDR_LEN], reply[SWP_HELLO_REPLY_LEN];
	struct iovec name;
	size_t sent;
	uint64_t tag;
	enum swx x;
	int fd, err;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		eprintf("bs_swift %s: socket: %m\n", s->volume);
		return errno == ENOMEM || errno == ENOBUFS ?
			SWX_NOMEM : SWX_UNREACHABLE;
	}

	/* bounds connect() too: AF_UNIX connect waits with the send timeout */
	tv.tv_sec = s->timeout_ms / 1000;
	tv.tv_usec = (s->timeout_ms % 1000) * 1000;
	if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv))) {
		eprintf("bs_swift %s: setsockopt: %m\n", s->volume);
		if (close(fd))
			eprintf("bs_swift %s: close: %m\n", s->volume);
		return SWX_UNREACHABLE;
	}

	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	memcpy(addr.sun_path, s->socket_path, strlen(s->socket_path));
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr))) {
		err = errno;
		if (close(fd))
			eprintf("bs_swift %s: close: %m\n", s->volume);
		swift_set_down(s, 1, strerror(err));
		return SWX_UNREACHABLE;
	}

	tag = swift_tag(s);
	swift_encode_hdr(h, SWP_OP_HELLO, 0, tag, 0, 0, strlen(s->volume));
	name.iov_base = s->volume;
	name.iov_len = strlen(s->volume);
	x = swift_sendv(fd, h, &name, 1, &sent);
	if (!x)
		x = swift_recv_reply(s, fd, SWP_OP_HELLO, tag, reply,
				     sizeof(reply), NULL, res);
	if (!x && res->status != SWP_STATUS_GOOD)
		x = SWX_REFUSED;
	if (!x) {
		uint64_t vsize = get_le64(reply);
		uint32_t bsize = get_le32(reply + 8);
		uint32_t maxp = get_le32(reply + 12);
		uint32_t vcaps = get_le32(reply + 16);

		if (!vsize || vsize % SWP_ALIGN || bsize < SWP_ALIGN ||
		    bsize > SWP_MAX_BLOCK || (bsize & (bsize - 1)) ||
		    maxp < SWP_MIN_PAYLOAD ||
		    maxp % SWP_ALIGN || get_le32(reply + 20)) {
			eprintf("bs_swift %s: bad handshake reply (size %"
				PRIu64 " block %u max payload %u)\n",
				s->volume, vsize, bsize, maxp);
			x = SWX_PROTO;
		} else if (s->size && vsize != s->size) {
			eprintf("bs_swift %s: volume size changed from %" PRIu64
				" to %" PRIu64 "; recreate the LU\n",
				s->volume, s->size, vsize);
			res->status = SWP_STATUS_CHECK_CONDITION;
			res->key = NOT_READY;
			res->asc = ASC_CAUSE_NOT_REPORTABLE;
			res->flags = 0;
			x = SWX_REFUSED;
		} else {
			if (size)
				*size = vsize;
			if (block_size)
				*block_size = bsize;
			if (max_payload)
				*max_payload = maxp < SWP_MAX_PAYLOAD ?
					maxp : SWP_MAX_PAYLOAD;
			if (caps)
				*caps = vcaps;
		}
	}
	if (x) {
		if (close(fd))
			eprintf("bs_swift %s: close: %m\n", s->volume);
		swift_set_down(s, 1, swx_name(x));
		return x;
	}

	swift_set_down(s, 0, NULL);
	*out_fd = fd;
	return SWX_OK;
}

/* ---- the LU's connection (struct swift_mux) ---- */

static void swift_cond_op(struct swift_lu *s, int err, const char *name)
{
	/* condition variable calls only fail on misuse: say so loudly */
	if (err) {
		eprintf("bs_swift %s: %s: %s\n", s->volume, name,
			strerror(err));
		abort();
	}
}

static struct swift_wait *swift_wait_new(struct swift_lu *s)
{
	pthread_condattr_t attr;
	struct swift_wait *w;
	int err;

	w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	/* deadlines are on the monotonic clock: a clock step changes nothing */
	err = pthread_condattr_init(&attr);
	if (!err) {
		err = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
		if (!err)
			err = pthread_cond_init(&w->cond, &attr);
		if (pthread_condattr_destroy(&attr))
			eprintf("bs_swift: pthread_condattr_destroy failed\n");
	}
	if (err) {
		eprintf("bs_swift %s: pthread_cond_init: %s\n", s->volume,
			strerror(err));
		free(w);
		return NULL;
	}
	return w;
}

static void swift_wait_free(struct swift_lu *s, struct swift_wait *w)
{
	swift_cond_op(s, pthread_cond_destroy(&w->cond),
		      "pthread_cond_destroy");
	free(w);
}

/* Takes w off m's list (under s->lock). */
static void swift_wait_unlink(struct swift_mux *m, struct swift_wait *w)
{
	struct swift_wait **pp;

	for (pp = &m->waiting; *pp; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			w->next = NULL;
			return;
		}
	}
}

/* Completes w with x (under s->lock); an abandoned one is freed. */
static void swift_wait_done(struct swift_lu *s, struct swift_wait *w,
			    enum swx x)
{
	if (w->abandoned) {
		swift_wait_free(s, w);
		return;
	}
	w->x = x;
	w->state = SWW_DONE;
	swift_cond_op(s, pthread_cond_signal(&w->cond), "pthread_cond_signal");
}

/* Asks a waiting worker other than self to take over reading (under s->lock). */
static void swift_mux_pass_reading(struct swift_lu *s, struct swift_mux *m,
				   struct swift_wait *self)
{
	struct swift_wait *w;

	for (w = m->waiting; w; w = w->next) {
		if (w != self && !w->abandoned && w->state == SWW_WAITING) {
			swift_cond_op(s, pthread_cond_signal(&w->cond),
				      "pthread_cond_signal");
			return;
		}
	}
}

/*
 * Marks m broken and fails every request waiting on it (under s->lock);
 * the one being received is finished by the reader, whose recv the
 * shutdown wakes. Returns 1 if m is now unreferenced: the caller frees it
 * after unlocking.
 */
static int swift_mux_break(struct swift_lu *s, struct swift_mux *m, enum swx x)
{
	struct swift_wait *w, *next, **pp;

	if (!m->broken) {
		m->broken = x;
		if (shutdown(m->fd, SHUT_RDWR) && errno != ENOTCONN)
			eprintf("bs_swift %s: shutdown: %m\n", s->volume);
		pp = &m->waiting;
		for (w = m->waiting; w; w = next) {
			next = w->next;
			if (w->state == SWW_RECEIVING) {
				pp = &w->next;
				continue;
			}
			*pp = next;
			w->next = NULL;
			swift_wait_done(s, w, x);
		}
	}
	if (s->mux == m) {
		s->mux = NULL;
		m->refs--;
	}
	return m->refs == 0;
}

static void swift_mux_free(struct swift_lu *s, struct swift_mux *m)
{
	struct swift_wait *w;
	int err;

	/* only abandoned requests can be left: their workers are gone */
	while ((w = m->waiting)) {
		m->waiting = w->next;
		swift_wait_free(s, w);
	}
	if (close(m->fd))
		eprintf("bs_swift %s: close: %m\n", s->volume);
	err = pthread_mutex_destroy(&m->send_lock);
	if (err)
		eprintf("bs_swift %s: pthread_mutex_destroy: %s\n", s->volume,
			strerror(err));
	free(m);
}

/* A new connection, shared from now on; takes fd (closed on failure). */
static struct swift_mux *swift_mux_new(struct swift_lu *s, int fd)
{
	struct swift_mux *m = calloc(1, sizeof(*m));
	int err = m ? pthread_mutex_init(&m->send_lock, NULL) : ENOMEM;

	if (err) {
		eprintf("bs_swift %s: no memory for a connection\n", s->volume);
		free(m);
		if (close(fd))
			eprintf("bs_swift %s: close: %m\n", s->volume);
		return NULL;
	}
	m->fd = fd;
	return m;
}

/* Installs m as the LU's connection, with the caller's reference (under s->lock). */
static void swift_mux_install(struct swift_lu *s, struct swift_mux *m,
			      int caller_refs)
{
	m->refs = 1 + caller_refs;
	s->mux = m;
}

static void swift_mux_release(struct swift_lu *s, struct swift_mux *m)
{
	int last;

	swift_lock(s);
	last = --m->refs == 0;
	swift_unlock(s);
	if (last)
		swift_mux_free(s, m);
}

/* Drops the LU's connection (closing or replacing it). */
static void swift_mux_drop(struct swift_lu *s)
{
	struct swift_mux *m;
	int last = 0;

	swift_lock(s);
	m = s->mux;
	if (m)
		last = swift_mux_break(s, m, SWX_LOST);
	swift_unlock(s);
	if (last)
		swift_mux_free(s, m);
}

/*
 * A reference to the LU's connection, connecting if there is none. While
 * one worker connects the others wait, and share its failure, so that a
 * daemon that does not answer costs one timeout, not one per worker.
 */
static enum swx swift_mux_get(struct swift_lu *s, struct swift_mux **out,
			      int *reused, struct swift_res *res)
{
	struct swift_mux *m = NULL;
	unsigned gen;
	enum swx x;
	int fd;

	swift_lock(s);
	for (;;) {
		gen = s->connect_gen;
		while (!s->mux && s->connecting)
			swift_cond_op(s, pthread_cond_wait(&s->connected,
							   &s->lock),
				      "pthread_cond_wait");
		if (s->mux) {
			m = s->mux;
			m->refs++;
			swift_unlock(s);
			*reused = 1;
			*out = m;
			return SWX_OK;
		}
		if (s->connect_gen == gen)
			break;	/* no attempt ended meanwhile: connect */
		if (s->connect_x) {
			/* the attempt this worker waited for failed */
			x = s->connect_x;
			*res = s->connect_res;
			swift_unlock(s);
			return x;
		}
		/* it succeeded, and that connection broke since: look again */
	}
	s->connecting = 1;
	swift_unlock(s);

	x = swift_connect(s, &fd, res, NULL, NULL, NULL, NULL);
	if (!x) {
		m = swift_mux_new(s, fd);
		if (!m)
			x = SWX_NOMEM;
	}

	swift_lock(s);
	s->connecting = 0;
	s->connect_gen++;
	s->connect_x = x;
	s->connect_res = *res;
	if (m)
		swift_mux_install(s, m, 1);
	swift_cond_op(s, pthread_cond_broadcast(&s->connected),
		      "pthread_cond_broadcast");
	swift_unlock(s);
	if (x)
		return x;
	/* maybe a new daemon: offer direct I/O again if it is off */
	__atomic_store_n(&s->direct_wanted, 1, __ATOMIC_RELAXED);
	*reused = 0;
	*out = m;
	return SWX_OK;
}

/*
 * The reader role: receives replies and hands each to its waiter, until
 * own's is in, the connection breaks, or nothing at all comes within the
 * timeout (then own, sent before, has waited at least that long).
 */
static void swift_mux_read(struct swift_lu *s, struct swift_mux *m,
			   struct swift_wait *own)
{
	uint8_t h[SWP_HDR_LEN];
	struct swift_wait *w;
	uint64_t tag;
	size_t got;
	enum swx x;
	int abandoned, last, done;

	for (;;) {
		x = swift_recv_count(m->fd, h, sizeof(h), &got);
		if (x == SWX_TIMEOUT && !got)
			return;
		swift_lock(s);
		w = NULL;
		if (!x) {
			tag = get_le64(h + 8);
			for (w = m->waiting; w && w->tag != tag; w = w->next)
				;
			if (!swift_reply_framed(h) || !w ||
			    h[5] != (w->op | SWP_REPLY)) {
				eprintf("bs_swift %s: bad reply header (op "
					"%02x tag %" PRIu64 ")\n", s->volume,
					h[5], tag);
				x = SWX_PROTO;
				w = NULL;
			}
		}
		if (x) {
			last = swift_mux_break(s, m, x);
			swift_unlock(s);
			if (last)
				eprintf("bs_swift %s: connection unreferenced "
					"while read\n", s->volume);
			return;
		}
		/* only the reader touches w's buffer, and w stays until done */
		abandoned = w->abandoned;
		if (!abandoned)
			w->state = SWW_RECEIVING;
		swift_unlock(s);
		if (abandoned)
			eprintf("bs_swift %s: late reply to op %02x tag %" PRIu64
				" thrown away\n", s->volume, w->op, tag);

		x = swift_reply_rest(s, m->fd, h, w->op,
				     abandoned ? NULL : w->in, w->in_len, NULL,
				     &w->res);

		swift_lock(s);
		swift_wait_unlink(m, w);
		swift_wait_done(s, w, x);
		if (x)
			swift_mux_break(s, m, x);
		done = x || m->broken || own->state == SWW_DONE;
		swift_unlock(s);
		if (done)
			return;
	}
}

static void swift_deadline(struct swift_lu *s, struct timespec *t)
{
	if (clock_gettime(CLOCK_MONOTONIC, t)) {
		eprintf("bs_swift %s: clock_gettime: %m\n", s->volume);
		abort();
	}
	t->tv_sec += s->timeout_ms / 1000;
	t->tv_nsec += (long)(s->timeout_ms % 1000) * 1000000;
	if (t->tv_nsec >= 1000000000) {
		t->tv_sec++;
		t->tv_nsec -= 1000000000;
	}
}

static int swift_past(struct swift_lu *s, const struct timespec *t)
{
	struct timespec now;

	if (clock_gettime(CLOCK_MONOTONIC, &now)) {
		eprintf("bs_swift %s: clock_gettime: %m\n", s->volume);
		abort();
	}
	return now.tv_sec > t->tv_sec ||
		(now.tv_sec == t->tv_sec && now.tv_nsec >= t->tv_nsec);
}

/*
 * Waits for w's reply, reading when no one else is. A request whose reply
 * has not begun within the timeout is abandoned to the reader (its reply,
 * when it comes, is thrown away) and fails alone with SWX_TIMEOUT.
 */
static enum swx swift_mux_wait(struct swift_lu *s, struct swift_mux *m,
			       struct swift_wait *w, struct swift_res *res)
{
	struct timespec deadline;
	enum swx x;
	int err;

	swift_deadline(s, &deadline);
	swift_lock(s);
	while (w->state != SWW_DONE) {
		if (w->state == SWW_WAITING && swift_past(s, &deadline)) {
			w->abandoned = 1;
			if (!m->reading)
				swift_mux_pass_reading(s, m, w);
			swift_unlock(s);
			return SWX_TIMEOUT;
		}
		if (!m->reading && !m->broken) {
			m->reading = 1;
			swift_unlock(s);
			swift_mux_read(s, m, w);
			swift_lock(s);
			m->reading = 0;
			swift_mux_pass_reading(s, m, w);
			continue;
		}
		if (w->state == SWW_RECEIVING) {
			/* the reader's recv has the timeout */
			err = pthread_cond_wait(&w->cond, &s->lock);
		} else {
			err = pthread_cond_timedwait(&w->cond, &s->lock,
						     &deadline);
			if (err == ETIMEDOUT)
				err = 0;
		}
		swift_cond_op(s, err, "pthread_cond_wait");
	}
	swift_unlock(s);
	x = w->x;
	*res = w->res;
	swift_wait_free(s, w);
	return x;
}

/* ---- direct I/O (doc/protocol.md, "Direct I/O") ---- */

static void swift_direct_free(struct swift_lu *s, struct swift_direct *d)
{
	if (d->map && munmap(d->map, d->map_len))
		eprintf("bs_swift %s: munmap: %m\n", s->volume);
	if (d->data_fd >= 0 && close(d->data_fd))
		eprintf("bs_swift %s: close: %m\n", s->volume);
	if (d->watch_fd >= 0 && close(d->watch_fd))
		eprintf("bs_swift %s: close: %m\n", s->volume);
	free(d);
}

static int is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static unsigned log2_of(uint64_t v)
{
	unsigned n = 0;

	while (v > 1) {
		v >>= 1;
		n++;
	}
	return n;
}

/* whether [off, off + len) lies inside a map of map_len bytes */
static int in_map(uint64_t off, uint64_t len, size_t map_len)
{
	return off <= map_len && len <= map_len - off;
}

/* Maps the block map and checks it describes this volume. */
static int swift_direct_map(struct swift_lu *s, struct swift_direct *d,
			    const char *map_path)
{
	struct stat st;
	uint64_t size, chunks, allow, touched, valid, dirty, total, bits;
	uint32_t bsize, osize;
	int fd;

	fd = open(map_path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		eprintf("bs_swift %s: %s: %m\n", s->volume, map_path);
		return -1;
	}
	if (fstat(fd, &st) || st.st_size < SWM_HDR_LEN) {
		eprintf("bs_swift %s: %s: not a block map\n", s->volume,
			map_path);
		if (close(fd))
			eprintf("bs_swift %s: close: %m\n", s->volume);
		return -1;
	}
	d->map_len = st.st_size;
	d->map = mmap(NULL, d->map_len, PROT_READ | PROT_WRITE, MAP_SHARED,
		      fd, 0);
	if (close(fd))
		eprintf("bs_swift %s: close: %m\n", s->volume);
	if (d->map == MAP_FAILED) {
		d->map = NULL;
		eprintf("bs_swift %s: mmap %s: %m\n", s->volume, map_path);
		return -1;
	}

	size = get_le64(d->map + SWM_OFF_SIZE);
	bsize = get_le32(d->map + SWM_OFF_BLOCK_SIZE);
	osize = get_le32(d->map + SWM_OFF_OBJECT_SIZE);
	chunks = get_le64(d->map + SWM_OFF_CHUNKS);
	allow = get_le64(d->map + SWM_OFF_ALLOW);
	touched = get_le64(d->map + SWM_OFF_TOUCHED);
	valid = get_le64(d->map + SWM_OFF_VALID);
	dirty = get_le64(d->map + SWM_OFF_DIRTY);
	total = get_le64(d->map + SWM_OFF_LENGTH);
	if (get_le32(d->map + SWM_OFF_MAGIC) != SWM_MAGIC ||
	    get_le32(d->map + SWM_OFF_VERSION) != SWM_VERSION ||
	    size != s->size ||
	    !is_pow2(bsize) || bsize < SWP_ALIGN || bsize > SWP_MAX_BLOCK ||
	    !is_pow2(osize) || osize < 8 * bsize ||
	    chunks != (size + osize - 1) / osize || total != d->map_len) {
		eprintf("bs_swift %s: %s does not describe this volume\n",
			s->volume, map_path);
		return -1;
	}
	bits = chunks * (osize / bsize / 8);
	if (!in_map(allow, chunks, total) || !in_map(touched, chunks, total) ||
	    !in_map(valid, bits, total) || !in_map(dirty, bits, total)) {
		eprintf("bs_swift %s: %s: sections out of bounds\n", s->volume,
			map_path);
		return -1;
	}
	d->inflight = (uint32_t *)(d->map + SWM_OFF_INFLIGHT);
	d->read_ops = (uint64_t *)(d->map + SWM_OFF_READ_OPS);
	d->read_bytes = (uint64_t *)(d->map + SWM_OFF_READ_BYTES);
	d->write_ops = (uint64_t *)(d->map + SWM_OFF_WRITE_OPS);
	d->write_bytes = (uint64_t *)(d->map + SWM_OFF_WRITE_BYTES);
	d->allow = d->map + allow;
	d->touched = d->map + touched;
	d->valid = d->map + valid;
	d->dirty = d->map + dirty;
	d->chunks = chunks;
	d->block_shift = log2_of(bsize);
	d->chunk_shift = log2_of(osize / bsize);
	return 0;
}

/* Opens a DIRECT session on a connection of its own; NULL if not possible. */
static struct swift_direct *swift_direct_open(struct swift_lu *s)
{
	struct swift_direct *d;
	struct swift_res res;
	uint8_t h[SWP_HDR_LEN];
	char reply[8 + 2 * SWP_MAX_PATH + 2], data_path[SWP_MAX_PATH + 1];
	char map_path[SWP_MAX_PATH + 1];
	uint32_t got = 0, dlen, mlen;
	struct stat st;
	size_t sent;
	uint64_t tag;
	enum swx x;

	d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->watch_fd = d->data_fd = -1;

	memset(&res, 0, sizeof(res));
	x = swift_connect(s, &d->watch_fd, &res, NULL, NULL, NULL, NULL);
	if (x) {
		d->watch_fd = -1;
		goto fail;
	}
	tag = swift_tag(s);
	swift_encode_hdr(h, SWP_OP_DIRECT, 0, tag, 0, 0, 0);
	x = swift_sendv(d->watch_fd, h, NULL, 0, &sent);
	if (!x)
		x = swift_recv_reply(s, d->watch_fd, SWP_OP_DIRECT, tag, reply,
				     sizeof(reply), &got, &res);
	if (x || res.status != SWP_STATUS_GOOD) {
		eprintf("bs_swift %s: DIRECT: %s (sense %x/%04x)\n", s->volume,
			x ? swx_name(x) : "refused", res.key, res.asc);
		goto fail;
	}
	if (got < 8 || get_le32((uint8_t *)reply) != SWP_DIRECT_VERSION) {
		eprintf("bs_swift %s: DIRECT: unknown reply\n", s->volume);
		goto fail;
	}
	dlen = get_le16((uint8_t *)reply + 4);
	mlen = get_le16((uint8_t *)reply + 6);
	if (!dlen || !mlen || dlen > SWP_MAX_PATH || mlen > SWP_MAX_PATH ||
	    8 + dlen + mlen != got) {
		eprintf("bs_swift %s: DIRECT: bad paths\n", s->volume);
		goto fail;
	}
	memcpy(data_path, reply + 8, dlen);
	data_path[dlen] = '\0';
	memcpy(map_path, reply + 8 + dlen, mlen);
	map_path[mlen] = '\0';

	if (swift_direct_map(s, d, map_path))
		goto fail;
	d->data_fd = open(data_path, O_RDWR | O_CLOEXEC);
	if (d->data_fd < 0) {
		eprintf("bs_swift %s: %s: %m\n", s->volume, data_path);
		goto fail;
	}
	if (fstat(d->data_fd, &st) || (uint64_t)st.st_size < s->size) {
		eprintf("bs_swift %s: %s is shorter than the volume\n",
			s->volume, data_path);
		goto fail;
	}
	return d;
fail:
	swift_direct_free(s, d);
	return NULL;
}

/* rwlock calls only fail on misuse: say so loudly if one ever does */
static void swift_rwlock_op(struct swift_lu *s,
			    int (*op)(pthread_rwlock_t *), const char *name)
{
	int err = op(&s->direct_lock);

	if (err) {
		eprintf("bs_swift %s: %s: %s\n", s->volume, name,
			strerror(err));
		abort();
	}
}

#define swift_rdlock(s) \
	swift_rwlock_op(s, pthread_rwlock_rdlock, "pthread_rwlock_rdlock")
#define swift_wrlock(s) \
	swift_rwlock_op(s, pthread_rwlock_wrlock, "pthread_rwlock_wrlock")
#define swift_rwunlock(s) \
	swift_rwlock_op(s, pthread_rwlock_unlock, "pthread_rwlock_unlock")

/* Starts direct I/O if it is wanted, off, and offered by the daemon. */
static void swift_direct_start(struct swift_lu *s)
{
	struct swift_direct *d;

	if (!__atomic_exchange_n(&s->direct_wanted, 0, __ATOMIC_ACQ_REL))
		return;
	if (!(s->caps & (1U << SWP_OP_DIRECT)) ||
	    __atomic_load_n(&s->direct, __ATOMIC_ACQUIRE))
		return;
	d = swift_direct_open(s);
	if (!d) {
		eprintf("bs_swift %s: no direct I/O: every command goes to "
			"the daemon\n", s->volume);
		return;
	}
	swift_wrlock(s);
	if (!s->direct) {
		__atomic_store_n(&s->direct, d, __ATOMIC_RELEASE);
		d = NULL;
	}
	swift_rwunlock(s);
	if (d)
		swift_direct_free(s, d);
	else
		eprintf("bs_swift %s: direct I/O on\n", s->volume);
}

static void swift_direct_stop(struct swift_lu *s, const char *why)
{
	struct swift_direct *d;

	swift_wrlock(s);
	d = s->direct;
	__atomic_store_n(&s->direct, NULL, __ATOMIC_RELEASE);
	swift_rwunlock(s);
	if (!d)
		return;
	swift_direct_free(s, d);
	if (why)
		eprintf("bs_swift %s: direct I/O off: %s\n", s->volume, why);
}

/* Whether the session's connection is still open (nothing to read, no hangup). */
static int swift_direct_alive(struct swift_direct *d)
{
	struct pollfd p = { .fd = d->watch_fd, .events = POLLIN };
	int r;

	do
		r = poll(&p, 1, 0);
	while (r < 0 && errno == EINTR);
	return r == 0;
}

/* Whether every block of [offset, offset + length) is valid in the overlay file. */
static int swift_direct_valid(struct swift_direct *d, uint64_t offset,
			      uint64_t length)
{
	uint64_t b = offset >> d->block_shift;
	uint64_t end = ((offset + length - 1) >> d->block_shift) + 1;

	while (b < end) {
		uint8_t byte = __atomic_load_n(&d->valid[b >> 3],
					       __ATOMIC_ACQUIRE);

		if (!(b & 7) && end - b >= 8) {
			if (byte != 0xff)
				return 0;
			b += 8;
			continue;
		}
		if (!(byte & (1U << (b & 7))))
			return 0;
		b++;
	}
	return 1;
}

/* Whether the daemon lets direct writes change every chunk of the range. */
static int swift_direct_writable(struct swift_direct *d, uint64_t offset,
				 uint64_t length)
{
	unsigned shift = d->block_shift + d->chunk_shift;
	uint64_t c, last = (offset + length - 1) >> shift;

	for (c = offset >> shift; c <= last; c++)
		if (!__atomic_load_n(&d->allow[c], __ATOMIC_SEQ_CST))
			return 0;
	return 1;
}

/* Records the range's blocks as written directly: bits first, then the chunks' flags. */
static void swift_direct_mark(struct swift_direct *d, uint64_t offset,
			      uint64_t length)
{
	uint64_t b = offset >> d->block_shift;
	uint64_t end = ((offset + length - 1) >> d->block_shift) + 1;
	uint64_t c;

	while (b < end) {
		uint8_t mask = 0;
		uint64_t byte = b >> 3;

		while (b < end && (b >> 3) == byte) {
			mask |= 1U << (b & 7);
			b++;
		}
		__atomic_fetch_or(&d->dirty[byte], mask, __ATOMIC_RELEASE);
	}
	for (c = (offset >> d->block_shift) >> d->chunk_shift;
	     c <= (end - 1) >> d->chunk_shift; c++)
		__atomic_store_n(&d->touched[c], 1, __ATOMIC_SEQ_CST);
}

static int swift_pio_full(int fd, char *buf, uint64_t length, uint64_t offset,
			  int write)
{
	ssize_t r;

	while (length) {
		r = write ? pwrite(fd, buf, length, offset) :
			pread(fd, buf, length, offset);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		buf += r;
		length -= r;
		offset += r;
	}
	return 0;
}

/*
 * Reads or writes [offset, offset + length) in the overlay file when the
 * map allows it. Returns 1 when done, 0 when the daemon must do it (also
 * when a pread/pwrite fails: the daemon then reports the error).
 */
static int swift_direct_io(struct swift_lu *s, uint64_t offset, char *buf,
			   uint64_t length, int write)
{
	struct swift_direct *d;
	int done = 0, dead = 0;

	if (!length || !__atomic_load_n(&s->direct, __ATOMIC_RELAXED))
		return 0;
	swift_rdlock(s);
	d = s->direct;
	if (!d || (write && __atomic_load_n(&s->exclusive, __ATOMIC_SEQ_CST)))
		goto out;
	if (!swift_direct_alive(d)) {
		dead = 1;
		goto out;
	}
	if (!write) {
		done = swift_direct_valid(d, offset, length) &&
			!swift_pio_full(d->data_fd, buf, length, offset, 0);
		goto out;
	}
	/* counted in before the permission is checked: the daemon clears
	 * permissions, then waits for the count to reach 0 */
	__atomic_fetch_add(d->inflight, 1, __ATOMIC_SEQ_CST);
	/* marked dirty before the write: if tgtd dies in between, the block is
	 * uploaded unchanged at worst; marked after, a write that landed could
	 * pass for clean cache and be left out of snapshots */
	if (swift_direct_writable(d, offset, length) &&
	    swift_direct_valid(d, offset, length)) {
		swift_direct_mark(d, offset, length);
		done = !swift_pio_full(d->data_fd, buf, length, offset, 1);
	}
	__atomic_fetch_sub(d->inflight, 1, __ATOMIC_SEQ_CST);
out:
	if (done) {
		/* for the daemon's metrics: it never sees these requests */
		__atomic_fetch_add(write ? d->write_ops : d->read_ops, 1,
				   __ATOMIC_RELAXED);
		__atomic_fetch_add(write ? d->write_bytes : d->read_bytes,
				   length, __ATOMIC_RELAXED);
	}
	swift_rwunlock(s);
	if (dead)
		swift_direct_stop(s, "the daemon closed the session");
	return done;
}

/* One request/reply exchange, on the LU's shared connection. */
static enum swx swift_call(struct swift_lu *s, struct swift_req *rq,
			   struct swift_res *res)
{
	uint8_t h[SWP_HDR_LEN];
	struct swift_mux *m = NULL;
	struct swift_wait *w;
	uint32_t plen = 0;
	size_t sent;
	int attempt, reused = 0, stale, i, last;
	enum swx x;

	memset(res, 0, sizeof(*res));
	if (!(s->caps & (1U << rq->op))) {
		res->status = SWP_STATUS_CHECK_CONDITION;
		res->key = ILLEGAL_REQUEST;
		res->asc = ASC_INVALID_OP_CODE;
		return SWX_OK;
	}
	for (i = 0; i < rq->nout; i++)
		plen += rq->out[i].iov_len;

	for (attempt = 0; attempt < 2; attempt++) {
		x = swift_mux_get(s, &m, &reused, res);
		if (x)
			return x;
		w = swift_wait_new(s);
		if (!w) {
			swift_mux_release(s, m);
			return SWX_NOMEM;
		}
		w->op = rq->op;
		w->in = rq->in;
		w->in_len = rq->in_len;

		/* registered before it is sent: the reply may come at once */
		swift_lock(s);
		w->tag = ++s->next_tag;
		w->next = m->waiting;
		m->waiting = w;
		x = m->broken;
		stale = x != SWX_OK;
		swift_unlock(s);
		sent = 0;
		if (!x) {
			swift_encode_hdr(h, rq->op, rq->flags, w->tag,
					 rq->offset, rq->length, plen);
			i = pthread_mutex_lock(&m->send_lock);
			swift_cond_op(s, i, "pthread_mutex_lock");
			x = swift_sendv(m->fd, h, rq->out, rq->nout, &sent);
			i = pthread_mutex_unlock(&m->send_lock);
			swift_cond_op(s, i, "pthread_mutex_unlock");
		}
		if (x) {
			/* a frame cut short breaks the stream for everyone */
			swift_lock(s);
			if (w->state != SWW_DONE)
				swift_wait_unlink(m, w);
			swift_mux_break(s, m, x);
			last = --m->refs == 0;
			swift_unlock(s);
			swift_wait_free(s, w);
			if (last)
				swift_mux_free(s, m);
			if (!sent && (stale || (reused && x == SWX_LOST))) {
				/* nothing left: the connection had broken, or
				 * the daemon went away while it was idle */
				continue;
			}
			swift_set_down(s, 1, swx_name(x));
			return x;
		}

		x = swift_mux_wait(s, m, w, res);
		swift_mux_release(s, m);
		if (x) {
			swift_set_down(s, 1, swx_name(x));
			return x;
		}
		if (__atomic_load_n(&s->direct_wanted, __ATOMIC_RELAXED))
			swift_direct_start(s);
		return SWX_OK;
	}
	return SWX_LOST;
}

/* ---- SCSI side ---- */

static void cmd_error_sense(struct scsi_cmd *cmd, uint8_t key, uint16_t asc)
{
	scsi_set_result(cmd, SAM_STAT_CHECK_CONDITION);
	sense_data_build(cmd, key, asc);
}

/*
 * Turns the outcome of an exchange into the command's status. Returns 0
 * when the command may go on (GOOD), -1 when it has failed.
 */
static int swift_result(struct scsi_cmd *cmd, enum swx x,
			struct swift_res *res, uint64_t info_base)
{
	switch (x) {
	case SWX_OK:
		break;
	case SWX_REFUSED:
		cmd_error_sense(cmd, res->key, res->asc);
		return -1;
	case SWX_UNREACHABLE:
		cmd_error_sense(cmd, NOT_READY, ASC_CAUSE_NOT_REPORTABLE);
		return -1;
	case SWX_LOST:
		cmd_error_sense(cmd, HARDWARE_ERROR, 0x0800);
		return -1;
	case SWX_TIMEOUT:
		cmd_error_sense(cmd, HARDWARE_ERROR, 0x0801);
		return -1;
	case SWX_PROTO:
	case SWX_NOMEM:
		cmd_error_sense(cmd, HARDWARE_ERROR, ASC_INTERNAL_TGT_FAILURE);
		return -1;
	}

	if (res->status == SWP_STATUS_GOOD)
		return 0;

	scsi_set_result(cmd, SAM_STAT_CHECK_CONDITION);
	if (res->flags & SWP_RF_INFO_VALID)
		sense_data_build_with_info(cmd, res->key, res->asc,
					   info_base + res->info);
	else
		sense_data_build(cmd, res->key, res->asc);
	return -1;
}

/*
 * A READ's result: a read error the daemon can place (INFO_VALID) carries
 * the volume byte offset of the first block it could not read, which the
 * sense data's INFORMATION field gives as that block's LBA.
 */
static int swift_read_result(struct scsi_cmd *cmd, enum swx x,
			     struct swift_res *res)
{
	if (x != SWX_OK || res->status == SWP_STATUS_GOOD ||
	    !(res->flags & SWP_RF_INFO_VALID))
		return swift_result(cmd, x, res, 0);
	scsi_set_result(cmd, SAM_STAT_CHECK_CONDITION);
	sense_data_build_with_info(cmd, res->key, res->asc,
				   res->info >> cmd->dev->blk_shift);
	return -1;
}

/*
 * The protocol moves 512-byte sectors inside the volume. Lengths come from
 * the data buffers, which an initiator may size oddly (iSCSI data-out
 * shorter than the SCSI transfer: tgt cuts the buffer to it): a range that
 * leaves the volume is refused like an out-of-range LBA, a read that ends
 * inside a sector reads the whole sector into a bounce buffer, and a write
 * or verify that ends inside a sector sends exactly its bytes, as bs_rdwr
 * writes them, if the daemon takes partial sectors (it keeps the rest of
 * the sector); else it is refused (INVALID FIELD IN CDB).
 */
static int swift_check_range(struct scsi_cmd *cmd, struct swift_lu *s,
			     uint64_t offset, uint64_t length, int whole)
{
	if (offset > s->size || length > s->size - offset) {
		cmd_error_sense(cmd, ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
		return -1;
	}
	if (offset % SWP_ALIGN || (whole && length % SWP_ALIGN &&
				   !(s->caps & SWP_CAP_PARTIAL_SECTOR))) {
		cmd_error_sense(cmd, ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
		return -1;
	}
	return 0;
}

static int swift_read(struct scsi_cmd *cmd, struct swift_lu *s,
		      uint64_t offset, char *buf, uint64_t length)
{
	struct swift_req rq;
	struct swift_res res;
	uint64_t done = 0, aligned = length & ~(uint64_t)(SWP_ALIGN - 1);
	char tail[SWP_ALIGN];
	uint32_t n;

	if (swift_check_range(cmd, s, offset, length, 0))
		return -1;
	if (length == aligned && swift_direct_io(s, offset, buf, length, 0))
		return 0;
	while (done < length) {
		memset(&rq, 0, sizeof(rq));
		rq.op = SWP_OP_READ;
		rq.offset = offset + done;
		if (done < aligned) {
			n = aligned - done < s->max_payload ?
				aligned - done : s->max_payload;
			rq.in = buf + done;
		} else {
			/* the last, partial sector */
			n = length - done;
			rq.in = tail;
		}
		rq.length = rq.in == tail ? SWP_ALIGN : n;
		rq.in_len = rq.length;
		if (rq.in == tail && offset + done + SWP_ALIGN > s->size) {
			cmd_error_sense(cmd, ILLEGAL_REQUEST,
					ASC_LBA_OUT_OF_RANGE);
			return -1;
		}
		if (swift_read_result(cmd, swift_call(s, &rq, &res), &res))
			return -1;
		if (rq.in == tail)
			memcpy(buf + done, tail, n);
		done += n;
	}
	return 0;
}

/*
 * Sends buf to the daemon as op (WRITE, or VERIFY: the daemon compares and
 * a miscompare's offset is relative to buf), in pieces of max_payload.
 */
static int swift_send_data(struct scsi_cmd *cmd, struct swift_lu *s,
			   uint8_t op, uint16_t flags, uint64_t offset,
			   const char *buf, uint64_t length)
{
	struct swift_req rq;
	struct swift_res res;
	uint64_t done = 0;
	uint32_t n;

	if (swift_check_range(cmd, s, offset, length, 1))
		return -1;
	while (done < length) {
		n = length - done < s->max_payload ?
			length - done : s->max_payload;
		memset(&rq, 0, sizeof(rq));
		rq.op = op;
		rq.flags = flags;
		rq.offset = offset + done;
		rq.length = n;
		rq.out[0].iov_base = (char *)buf + done;
		rq.out[0].iov_len = n;
		rq.nout = 1;
		if (swift_result(cmd, swift_call(s, &rq, &res), &res, done))
			return -1;
		done += n;
	}
	return 0;
}

/*
 * A command the daemon runs exclusive of writes to its range (COMPARE AND
 * WRITE; a write that ends inside a sector, which the daemon merges with
 * the rest of the sector): direct writes stop, and those in progress
 * finish, before it is sent.
 */
static void swift_exclusive_begin(struct swift_lu *s)
{
	__atomic_add_fetch(&s->exclusive, 1, __ATOMIC_SEQ_CST);
	swift_wrlock(s);
	swift_rwunlock(s);
}

static void swift_exclusive_end(struct swift_lu *s)
{
	__atomic_sub_fetch(&s->exclusive, 1, __ATOMIC_SEQ_CST);
}

static int swift_write(struct scsi_cmd *cmd, struct swift_lu *s,
		       uint64_t offset, const char *buf, uint64_t length,
		       int fua)
{
	uint16_t flags = fua ? SWP_F_FUA : 0;
	int ret;

	if (swift_check_range(cmd, s, offset, length, 1))
		return -1;
	if (length % SWP_ALIGN) {
		swift_exclusive_begin(s);
		ret = swift_send_data(cmd, s, SWP_OP_WRITE, flags, offset,
				      buf, length);
		swift_exclusive_end(s);
		return ret;
	}
	if (!fua && swift_direct_io(s, offset, (char *)buf, length, 1))
		return 0;
	return swift_send_data(cmd, s, SWP_OP_WRITE, flags, offset, buf,
			       length);
}

static int swift_verify(struct scsi_cmd *cmd, struct swift_lu *s,
			uint64_t offset, const char *buf, uint64_t length)
{
	return swift_send_data(cmd, s, SWP_OP_VERIFY, 0, offset, buf, length);
}

static int swift_simple(struct scsi_cmd *cmd, struct swift_lu *s, uint8_t op,
			uint16_t flags, uint64_t offset, uint64_t length)
{
	struct swift_req rq;
	struct swift_res res;

	memset(&rq, 0, sizeof(rq));
	rq.op = op;
	rq.flags = flags;
	rq.offset = offset;
	rq.length = length;
	return swift_result(cmd, swift_call(s, &rq, &res), &res, 0);
}

/*
 * tgt keeps cmd->tl in 32 bits; WRITE SAME and PRE-FETCH may span more, so
 * their byte length is taken from the CDB again (sbc_rw has checked it).
 */
static uint64_t swift_cdb_length(struct scsi_cmd *cmd)
{
	struct scsi_lu *lu = cmd->dev;
	uint64_t lba = scsi_rw_offset(cmd->scb);
	uint64_t blocks = scsi_rw_count(cmd->scb);
	uint64_t nr = lu->size >> lu->blk_shift;

	if (!blocks && (cmd->scb[0] == WRITE_SAME ||
			cmd->scb[0] == WRITE_SAME_16) && lba < nr)
		blocks = nr - lba;
	if (lba > nr || blocks > nr - lba)
		return cmd->tl;
	return blocks << lu->blk_shift;
}

/* FUA bit, or the write cache disabled in the caching mode page */
static int swift_want_fua(struct scsi_cmd *cmd, struct mode_pg *pg)
{
	return ((cmd->scb[0] != WRITE_6) && (cmd->scb[1] & 0x8)) ||
		!(pg->mode_data[0] & 0x04);
}

static void bs_swift_request(struct scsi_cmd *cmd)
{
	struct scsi_lu *lu = cmd->dev;
	struct swift_lu *s = SWIFT_LU(lu);
	uint64_t offset = cmd->offset;
	uint64_t length = 0, tl;
	struct swift_req rq;
	struct swift_res res;
	struct mode_pg *pg;
	const char *write_buf = NULL;
	char *tmpbuf, *ptr;
	int do_verify = 0;
	uint64_t i;

	/* overwritten on error */
	scsi_set_result(cmd, SAM_STAT_GOOD);

	switch (cmd->scb[0]) {
	case ORWRITE_16:
		length = scsi_get_out_length(cmd);

		tmpbuf = malloc(length ? length : 1);
		if (!tmpbuf) {
			cmd_error_sense(cmd, HARDWARE_ERROR,
					ASC_INTERNAL_TGT_FAILURE);
			break;
		}
		if (swift_read(cmd, s, offset, tmpbuf, length)) {
			free(tmpbuf);
			break;
		}
		ptr = scsi_get_out_buffer(cmd);
		for (i = 0; i < length; i++)
			ptr[i] |= tmpbuf[i];
		free(tmpbuf);

		write_buf = scsi_get_out_buffer(cmd);
		goto write;
	case COMPARE_AND_WRITE:
		/* Blocks are transferred twice, first the set that
		 * we compare to the existing data, and second the set
		 * to write if the compare was successful.
		 */
		length = scsi_get_out_length(cmd) / 2;
		if (length != cmd->tl) {
			cmd_error_sense(cmd, ILLEGAL_REQUEST,
					ASC_INVALID_FIELD_IN_CDB);
			break;
		}
		if (!length)
			break;
		if (2 * length > s->max_payload) {
			cmd_error_sense(cmd, ILLEGAL_REQUEST,
					ASC_INVALID_FIELD_IN_CDB);
			break;
		}
		if (swift_check_range(cmd, s, offset, length, 1))
			break;
		pg = find_mode_page(cmd->dev, 0x08, 0);
		if (pg == NULL) {
			cmd_error_sense(cmd, ILLEGAL_REQUEST,
					ASC_INVALID_FIELD_IN_CDB);
			break;
		}
		memset(&rq, 0, sizeof(rq));
		rq.op = SWP_OP_COMPARE_AND_WRITE;
		rq.flags = swift_want_fua(cmd, pg) ? SWP_F_FUA : 0;
		rq.offset = offset;
		rq.length = length;
		rq.out[0].iov_base = scsi_get_out_buffer(cmd);
		rq.out[0].iov_len = 2 * length;
		rq.nout = 1;
		/* atomic against writes, direct ones too */
		swift_exclusive_begin(s);
		swift_result(cmd, swift_call(s, &rq, &res), &res, 0);
		swift_exclusive_end(s);
		break;
	case SYNCHRONIZE_CACHE:
	case SYNCHRONIZE_CACHE_16:
		if (cmd->scb[1] & 0x2)
			cmd_error_sense(cmd, ILLEGAL_REQUEST,
					ASC_INVALID_FIELD_IN_CDB);
		else
			swift_simple(cmd, s, SWP_OP_FLUSH, 0, 0, 0);
		break;
	case WRITE_VERIFY:
	case WRITE_VERIFY_12:
	case WRITE_VERIFY_16:
		do_verify = 1;
		/* fall through */
	case WRITE_6:
	case WRITE_10:
	case WRITE_12:
	case WRITE_16:
		length = scsi_get_out_length(cmd);
		write_buf = scsi_get_out_buffer(cmd);
write:
		/*
		 * it would be better not to access to pg
		 * directy.
		 */
		pg = find_mode_page(cmd->dev, 0x08, 0);
		if (pg == NULL) {
			cmd_error_sense(cmd, ILLEGAL_REQUEST,
					ASC_INVALID_FIELD_IN_CDB);
			break;
		}
		if (swift_write(cmd, s, offset, write_buf, length,
				swift_want_fua(cmd, pg)))
			break;
		if (do_verify)
			goto verify;
		break;
	case WRITE_SAME:
	case WRITE_SAME_16:
		/* sbc_rw has rejected ANCHOR, LBDATA with PBDATA, UNMAP
		 * without thin provisioning and a data-out length other
		 * than 0 (NDOB: zeros) or one block */
		memset(&rq, 0, sizeof(rq));
		rq.op = SWP_OP_WRITE_SAME;
		if (cmd->scb[1] & 0x08)
			rq.flags |= SWP_F_UNMAP;
		switch (cmd->scb[1] & 0x06) {
		case 0x02: /* PBDATA==0 LBDATA==1 */
			rq.flags |= SWP_F_LBDATA;
			break;
		case 0x04: /* PBDATA==1 LBDATA==0 */
			rq.flags |= SWP_F_PBDATA;
			break;
		}
		pg = find_mode_page(cmd->dev, 0x08, 0);
		if (pg && !(pg->mode_data[0] & 0x04))
			rq.flags |= SWP_F_FUA;
		rq.offset = offset;
		rq.length = swift_cdb_length(cmd);
		if (!rq.length)
			break;
		length = scsi_get_out_length(cmd);
		if (length) {
			if (length != (1U << lu->blk_shift)) {
				cmd_error_sense(cmd, ILLEGAL_REQUEST,
						ASC_PARAMETER_LIST_LENGTH_ERR);
				break;
			}
			rq.out[0].iov_base = scsi_get_out_buffer(cmd);
			rq.out[0].iov_len = length;
			rq.nout = 1;
		} else if (rq.flags & (SWP_F_LBDATA | SWP_F_PBDATA)) {
			/* no block to put the LBA in */
			cmd_error_sense(cmd, ILLEGAL_REQUEST,
					ASC_INVALID_FIELD_IN_CDB);
			break;
		}
		swift_result(cmd, swift_call(s, &rq, &res), &res, 0);
		break;
	case READ_6:
	case READ_10:
	case READ_12:
	case READ_16:
		length = scsi_get_in_length(cmd);
		if (length > cmd->tl)
			length = cmd->tl;
		swift_read(cmd, s, offset, scsi_get_in_buffer(cmd), length);
		break;
	case PRE_FETCH_10:
	case PRE_FETCH_16:
		tl = swift_cdb_length(cmd);
		if (tl)
			swift_simple(cmd, s, SWP_OP_PREFETCH, 0, offset, tl);
		break;
	case VERIFY_10:
	case VERIFY_12:
	case VERIFY_16:
verify:
		length = scsi_get_out_length(cmd);
		swift_verify(cmd, s, offset, scsi_get_out_buffer(cmd), length);
		break;
	case UNMAP:
		if (!cmd->dev->attrs.thinprovisioning) {
			cmd_error_sense(cmd, ILLEGAL_REQUEST,
					ASC_INVALID_FIELD_IN_CDB);
			break;
		}

		length = scsi_get_out_length(cmd);
		tmpbuf = scsi_get_out_buffer(cmd);

		if (length < 8)
			break;

		length -= 8;
		tmpbuf += 8;

		while (length >= 16) {
			uint64_t nr = lu->size >> lu->blk_shift;
			uint64_t lba = get_unaligned_be64(&tmpbuf[0]);
			uint64_t blocks = get_unaligned_be32(&tmpbuf[8]);

			if (lba > nr || blocks > nr - lba) {
				eprintf("UNMAP beyond EOF\n");
				cmd_error_sense(cmd, ILLEGAL_REQUEST,
						ASC_LBA_OUT_OF_RANGE);
				break;
			}

			if (blocks > 0 &&
			    swift_simple(cmd, s, SWP_OP_UNMAP, 0,
					 lba << lu->blk_shift,
					 blocks << lu->blk_shift))
				break;

			length -= 16;
			tmpbuf += 16;
		}
		break;
	default:
		break;
	}

	/* while the daemon is away, swift_set_down() has said so once */
	if (scsi_get_result(cmd) != SAM_STAT_GOOD &&
	    !__atomic_load_n(&s->down, __ATOMIC_RELAXED))
		eprintf("io error %p %x %" PRIu64 " %" PRIu64 "\n",
			cmd, cmd->scb[0], length, offset);
}

/* ---- LU life cycle ---- */

static int is_opt(const char *opt, const char *p)
{
	size_t n = strlen(opt);

	return !strncmp(p, opt, n) && p[n] == '=';
}

/* bsopts: "socket=PATH;timeout=SECONDS" (';' since tgtadm splits on ',') */
static int swift_parse_opts(struct swift_lu *s, const char *bsopts)
{
	const char *p = bsopts, *end, *val;
	size_t n, vlen;
	char num[32], *e;
	double t;

	while (p && *p) {
		end = strchr(p, ';');
		n = end ? (size_t)(end - p) : strlen(p);
		if (n == 0) {
			p = end + 1;
			continue;
		}
		val = memchr(p, '=', n);
		vlen = val ? n - (val + 1 - p) : 0;
		if (is_opt("socket", p)) {
			if (!vlen || vlen >= sizeof(s->socket_path)) {
				eprintf("bs_swift: bad socket path in "
					"bsopts \"%s\"\n", bsopts);
				return -1;
			}
			memcpy(s->socket_path, val + 1, vlen);
			s->socket_path[vlen] = '\0';
		} else if (is_opt("timeout", p)) {
			if (!vlen || vlen >= sizeof(num)) {
				eprintf("bs_swift: bad timeout in bsopts "
					"\"%s\"\n", bsopts);
				return -1;
			}
			memcpy(num, val + 1, vlen);
			num[vlen] = '\0';
			errno = 0;
			t = strtod(num, &e);
			if (errno || *e || !isfinite(t) || t < 0.1 ||
			    t > 3600) {
				eprintf("bs_swift: timeout must be 0.1 to 3600 "
					"seconds, not \"%s\"\n", num);
				return -1;
			}
			s->timeout_ms = (int)(t * 1000);
		} else {
			eprintf("bs_swift: unknown option \"%.*s\" in bsopts "
				"(known: socket=PATH;timeout=SECONDS)\n",
				(int)n, p);
			return -1;
		}
		p = end ? end + 1 : NULL;
	}
	return 0;
}

static int bs_swift_open(struct scsi_lu *lu, char *path, int *fd,
			 uint64_t *size)
{
	struct swift_lu *s = SWIFT_LU(lu);
	struct swift_res res;
	struct swift_mux *m;
	size_t i, n = strlen(path);
	enum swx x;
	int cfd;

	if (n == 0 || n > SWP_MAX_NAME) {
		eprintf("bs_swift: volume name must be 1 to %d bytes\n",
			SWP_MAX_NAME);
		return -1;
	}
	for (i = 0; i < n; i++) {
		if ((unsigned char)path[i] < 0x20 || path[i] == 0x7f) {
			eprintf("bs_swift: control character in volume name\n");
			return -1;
		}
	}
	memcpy(s->volume, path, n + 1);
	s->size = 0;

	memset(&res, 0, sizeof(res));
	x = swift_connect(s, &cfd, &res, &s->size, &s->block_size,
			  &s->max_payload, &s->caps);
	if (x) {
		if (x == SWX_REFUSED)
			eprintf("bs_swift %s: daemon refused the volume "
				"(sense %x/%04x)\n", s->volume, res.key,
				res.asc);
		else
			eprintf("bs_swift %s: cannot open through %s: %s\n",
				s->volume, s->socket_path, swx_name(x));
		s->size = 0;
		return -1;
	}

	m = swift_mux_new(s, cfd);
	if (!m) {
		s->size = 0;
		return -1;
	}
	swift_mux_drop(s);
	swift_lock(s);
	swift_mux_install(s, m, 0);
	swift_unlock(s);

	/* report the daemon's block as the physical block (as bs_rdwr reports
	 * st_blksize), so initiators align their I/O to it */
	if (!lu->attrs.no_auto_lbppbe)
		update_lbppbe(lu, s->block_size);

	eprintf("bs_swift %s: %" PRIu64 " bytes, physical block %u, via %s\n",
		s->volume, s->size, s->block_size, s->socket_path);
	__atomic_store_n(&s->direct_wanted, 1, __ATOMIC_RELAXED);
	/* a daemon that opens the volume at its first command gets DIRECT
	 * after that command (swift_exchange), not now: tgtd's main loop
	 * must not wait on the store while the LU is created */
	if (!(s->caps & SWP_CAP_DEFERRED_OPEN))
		swift_direct_start(s);

	/* no file behind the LU: GET LBA STATUS reports every block mapped */
	*fd = -1;
	*size = s->size;
	return 0;
}

static void bs_swift_close(struct scsi_lu *lu)
{
	struct swift_lu *s = SWIFT_LU(lu);

	swift_direct_stop(s, NULL);
	swift_mux_drop(s);
	s->size = 0;
}

/*
 * UNMAP's parameter list length is 16 bits, so one UNMAP carries at most
 * (65535 - 8) / 16 = 4095 block descriptors. The Block Limits page says so
 * in MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT, where tgt puts 0xffffffff ("no
 * limit"): initiators that keep the count in an int read that as -1, and
 * libiscsi's test tool then sends an UNMAP of -1 descriptors, whatever its
 * heap holds. tgt rewrites the page when thin provisioning is switched on
 * (after bs_init), so its update function is wrapped, not the page patched.
 */
#define SWIFT_MAX_UNMAP_DESCRIPTORS ((0xffff - 8) / 16)

static void (*tgt_update_vpd_b0)(struct scsi_lu *lu, void *data);

static void swift_update_vpd_b0(struct scsi_lu *lu, void *data)
{
	struct vpd *pg = lu->attrs.lu_vpd[PCODE_OFFSET(0xb0)];

	tgt_update_vpd_b0(lu, data);
	if (lu->attrs.thinprovisioning)
		put_unaligned_be32(SWIFT_MAX_UNMAP_DESCRIPTORS, pg->data + 20);
}

static void swift_wrap_vpd_b0(struct scsi_lu *lu)
{
	struct vpd *pg = lu->attrs.lu_vpd[PCODE_OFFSET(0xb0)];

	if (!pg || !pg->vpd_update || pg->vpd_update == swift_update_vpd_b0)
		return;
	/* the same function of spc.c for every LU */
	tgt_update_vpd_b0 = pg->vpd_update;
	pg->vpd_update = swift_update_vpd_b0;
	swift_update_vpd_b0(lu, NULL);
}

/* ---- the worker pool, one for all swift LUs of this tgtd ---- */

static void bs_swift_request(struct scsi_cmd *cmd);

static struct {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct list_head pending;	/* submitted, waiting for a worker */
	pthread_mutex_t done_lock;
	struct list_head done;		/* answered, for tgtd's main loop */
	int done_fd;			/* eventfd: done has commands */
	pthread_t *threads;
	int nr;
	int users;			/* LUs; touched by tgtd's main loop only */
	int stopping;
} pool = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.wake = PTHREAD_COND_INITIALIZER,
	.done_lock = PTHREAD_MUTEX_INITIALIZER,
	.done_fd = -1,
};

static void *swift_worker(void *arg)
{
	struct scsi_cmd *cmd;
	uint64_t one = 1;
	sigset_t set;
	ssize_t r;

	(void)arg;
	sigfillset(&set);
	if (pthread_sigmask(SIG_BLOCK, &set, NULL))
		eprintf("bs_swift: pthread_sigmask failed\n");
	for (;;) {
		pthread_mutex_lock(&pool.lock);
		while (list_empty(&pool.pending) && !pool.stopping)
			pthread_cond_wait(&pool.wake, &pool.lock);
		if (list_empty(&pool.pending)) {
			pthread_mutex_unlock(&pool.lock);
			return NULL;
		}
		cmd = list_first_entry(&pool.pending, struct scsi_cmd, bs_list);
		list_del(&cmd->bs_list);
		pthread_mutex_unlock(&pool.lock);

		bs_swift_request(cmd);

		pthread_mutex_lock(&pool.done_lock);
		list_add_tail(&cmd->bs_list, &pool.done);
		pthread_mutex_unlock(&pool.done_lock);
		do
			r = write(pool.done_fd, &one, sizeof(one));
		while (r < 0 && errno == EINTR);
		if (r < 0)
			eprintf("bs_swift: eventfd write: %m\n");
	}
}

/* tgtd's main loop: hands answered commands back to tgt */
static void swift_pool_done(int fd, int events, void *data)
{
	struct scsi_cmd *cmd;
	LIST_HEAD(list);
	uint64_t count;

	(void)events;
	(void)data;
	if (read(fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
		eprintf("bs_swift: eventfd read: %m\n");
	pthread_mutex_lock(&pool.done_lock);
	list_splice_init(&pool.done, &list);
	pthread_mutex_unlock(&pool.done_lock);
	while (!list_empty(&list)) {
		cmd = list_first_entry(&list, struct scsi_cmd, bs_list);
		list_del(&cmd->bs_list);
		target_cmd_io_done(cmd, scsi_get_result(cmd));
	}
}

static void swift_pool_stop(void)
{
	int i, err;

	pthread_mutex_lock(&pool.lock);
	pool.stopping = 1;
	pthread_cond_broadcast(&pool.wake);
	pthread_mutex_unlock(&pool.lock);
	for (i = 0; i < pool.nr; i++) {
		err = pthread_join(pool.threads[i], NULL);
		if (err)
			eprintf("bs_swift: pthread_join: %s\n", strerror(err));
	}
	free(pool.threads);
	pool.threads = NULL;
	pool.nr = 0;
	if (pool.done_fd >= 0) {
		tgt_event_del(pool.done_fd);
		if (close(pool.done_fd))
			eprintf("bs_swift: close: %m\n");
		pool.done_fd = -1;
	}
	/* answered after the last LU went: nothing left to hand back to */
	pool.stopping = 0;
}

/* A LU joins the pool: the first one starts it. */
static tgtadm_err swift_pool_get(void)
{
	int i, err;

	if (pool.users++ > 0)
		return TGTADM_SUCCESS;
	INIT_LIST_HEAD(&pool.pending);
	INIT_LIST_HEAD(&pool.done);
	pool.done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (pool.done_fd < 0) {
		eprintf("bs_swift: eventfd: %m\n");
		goto fail;
	}
	if (tgt_event_add(pool.done_fd, EPOLLIN, swift_pool_done, NULL)) {
		eprintf("bs_swift: cannot watch the eventfd\n");
		if (close(pool.done_fd))
			eprintf("bs_swift: close: %m\n");
		pool.done_fd = -1;
		goto fail;
	}
	pool.threads = calloc(nr_iothreads, sizeof(*pool.threads));
	if (!pool.threads)
		goto stop;
	for (i = 0; i < nr_iothreads; i++) {
		err = pthread_create(&pool.threads[i], NULL, swift_worker, NULL);
		if (err) {
			eprintf("bs_swift: pthread_create: %s\n", strerror(err));
			goto stop;
		}
		pool.nr++;
	}
	eprintf("bs_swift: %d worker threads for all swift LUs\n", pool.nr);
	return TGTADM_SUCCESS;
stop:
	swift_pool_stop();
fail:
	pool.users--;
	return TGTADM_NOMEM;
}

/* A LU leaves the pool (tgt has no command of it outstanding): the last one stops it. */
static void swift_pool_put(void)
{
	if (--pool.users == 0)
		swift_pool_stop();
}

static int swift_cmd_submit(struct scsi_cmd *cmd)
{
	pthread_mutex_lock(&pool.lock);
	list_add_tail(&cmd->bs_list, &pool.pending);
	pthread_cond_signal(&pool.wake);
	pthread_mutex_unlock(&pool.lock);
	set_cmd_async(cmd);
	return 0;
}

static tgtadm_err bs_swift_init(struct scsi_lu *lu, char *bsopts)
{
	struct swift_lu *s = SWIFT_LU(lu);
	pthread_rwlockattr_t rwattr;
	tgtadm_err ret;
	int err;

	memset(s, 0, sizeof(*s));
	strcpy(s->socket_path, DEFAULT_SOCKET);
	s->timeout_ms = DEFAULT_TIMEOUT_MS;
	if (swift_parse_opts(s, bsopts))
		return TGTADM_INVALID_REQUEST;

	err = pthread_mutex_init(&s->lock, NULL);
	if (err) {
		eprintf("bs_swift: pthread_mutex_init: %s\n", strerror(err));
		return TGTADM_NOMEM;
	}
	err = pthread_cond_init(&s->connected, NULL);
	if (err) {
		eprintf("bs_swift: pthread_cond_init: %s\n", strerror(err));
		if (pthread_mutex_destroy(&s->lock))
			eprintf("bs_swift: pthread_mutex_destroy failed\n");
		return TGTADM_NOMEM;
	}
	/* writers first: COMPARE AND WRITE must not wait behind a stream of
	 * direct I/O */
	err = pthread_rwlockattr_init(&rwattr);
	if (!err)
		err = pthread_rwlockattr_setkind_np(&rwattr,
			PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	if (!err)
		err = pthread_rwlock_init(&s->direct_lock, &rwattr);
	if (err) {
		eprintf("bs_swift: pthread_rwlock_init: %s\n", strerror(err));
		if (pthread_cond_destroy(&s->connected))
			eprintf("bs_swift: pthread_cond_destroy failed\n");
		if (pthread_mutex_destroy(&s->lock))
			eprintf("bs_swift: pthread_mutex_destroy failed\n");
		return TGTADM_NOMEM;
	}
	if (pthread_rwlockattr_destroy(&rwattr))
		eprintf("bs_swift: pthread_rwlockattr_destroy failed\n");

	swift_wrap_vpd_b0(lu);
	ret = swift_pool_get();
	if (ret != TGTADM_SUCCESS) {
		err = pthread_rwlock_destroy(&s->direct_lock);
		if (err)
			eprintf("bs_swift: pthread_rwlock_destroy: %s\n",
				strerror(err));
		err = pthread_cond_destroy(&s->connected);
		if (err)
			eprintf("bs_swift: pthread_cond_destroy: %s\n",
				strerror(err));
		err = pthread_mutex_destroy(&s->lock);
		if (err)
			eprintf("bs_swift: pthread_mutex_destroy: %s\n",
				strerror(err));
	}
	return ret;
}

static void bs_swift_exit(struct scsi_lu *lu)
{
	struct swift_lu *s = SWIFT_LU(lu);
	int err;

	swift_pool_put();
	swift_direct_stop(s, NULL);
	swift_mux_drop(s);
	err = pthread_rwlock_destroy(&s->direct_lock);
	if (err)
		eprintf("bs_swift: pthread_rwlock_destroy: %s\n", strerror(err));
	err = pthread_cond_destroy(&s->connected);
	if (err)
		eprintf("bs_swift: pthread_cond_destroy: %s\n", strerror(err));
	err = pthread_mutex_destroy(&s->lock);
	if (err)
		eprintf("bs_swift: pthread_mutex_destroy: %s\n", strerror(err));
}

static struct backingstore_template swift_bst = {
	.bs_name		= "swift",
	.bs_datasize		= sizeof(struct swift_lu),
	.bs_open		= bs_swift_open,
	.bs_close		= bs_swift_close,
	.bs_init		= bs_swift_init,
	.bs_exit		= bs_swift_exit,
	.bs_cmd_submit		= swift_cmd_submit,
	.bs_oflags_supported	= 0,
};

void register_bs_module(void)
{
	unsigned char opcodes[] = {
		ALLOW_MEDIUM_REMOVAL,
		COMPARE_AND_WRITE,
		FORMAT_UNIT,
		INQUIRY,
		MAINT_PROTOCOL_IN,
		MODE_SELECT,
		MODE_SELECT_10,
		MODE_SENSE,
		MODE_SENSE_10,
		ORWRITE_16,
		PERSISTENT_RESERVE_IN,
		PERSISTENT_RESERVE_OUT,
		PRE_FETCH_10,
		PRE_FETCH_16,
		READ_10,
		READ_12,
		READ_16,
		READ_6,
		READ_CAPACITY,
		RELEASE,
		REPORT_LUNS,
		REQUEST_SENSE,
		RESERVE,
		SEND_DIAGNOSTIC,
		SERVICE_ACTION_IN,
		START_STOP,
		SYNCHRONIZE_CACHE,
		SYNCHRONIZE_CACHE_16,
		TEST_UNIT_READY,
		UNMAP,
		VERIFY_10,
		VERIFY_12,
		VERIFY_16,
		WRITE_10,
		WRITE_12,
		WRITE_16,
		WRITE_6,
		WRITE_SAME,
		WRITE_SAME_16,
		WRITE_VERIFY,
		WRITE_VERIFY_12,
		WRITE_VERIFY_16
	};

	bs_create_opcode_map(&swift_bst, opcodes, ARRAY_SIZE(opcodes));
	if (register_backingstore_template(&swift_bst))
		eprintf("bs_swift: cannot register the backing store\n");
}
