/*
 * The per-listener client table behind client_limits: open sessions per
 * client address and per prefix, and each address's token bucket, in a
 * fixed number of entries shared by every worker thread (one mutex, held
 * for a lookup and a few integer updates).
 *
 * An address and a prefix each take an entry of the same bounded pool.
 * An entry that counts open sessions is never evicted; an idle one (no
 * open sessions) is, oldest first, when a new key needs room, so that
 * memory stays at the size given at creation, and a flood of new
 * addresses can push out only entries that hold nothing but a bucket.  A
 * client that finds every entry holding sessions is refused
 * (CLIENTTAB_FULL), as over a limit.
 *
 * A session that is admitted gets a hold, which it gives back exactly once
 * with clienttab_release(), whatever the configuration has become since:
 * the hold names the entries it counted in.
 */
#ifndef STP_CLIENTTAB_H
#define STP_CLIENTTAB_H

#include <stddef.h>
#include <stdint.h>

#include "cidr.h"

#define CLIENTTAB_SIZE_MIN	16
#define CLIENTTAB_SIZE_MAX	(1u << 24)

struct clienttab;

/* 0 = no limit, as in client_limits. */
struct clienttab_limits {
	unsigned	 per_address;
	unsigned	 per_prefix;
	unsigned	 prefix4;
	unsigned	 prefix6;
	unsigned	 rate;		/* new sessions per address per second */
	unsigned	 burst;
};

struct clienttab_hold {
	struct clienttab *t;		/* NULL: holds nothing */
	uint32_t	 addr;		/* entry index + 1, or 0 */
	uint32_t	 prefix;
};

enum clienttab_verdict {
	CLIENTTAB_OK,
	CLIENTTAB_ADDRESS,	/* sessions_per_address reached */
	CLIENTTAB_PREFIX,	/* sessions_per_prefix reached */
	CLIENTTAB_RATE,		/* no token in the address's bucket */
	CLIENTTAB_FULL,		/* every entry holds sessions */
};

struct clienttab_counts {
	size_t		 size;		/* entries in the pool */
	size_t		 used;		/* of them, in use */
	size_t		 held;		/* sessions holding entries now */
	unsigned long long evicted;	/* idle entries reused so far */
};

/* NULL when memory runs out; size is clamped to [MIN, MAX]. */
struct clienttab *clienttab_new(size_t size);
void		 clienttab_free(struct clienttab *);
size_t		 clienttab_size(const struct clienttab *);

/*
 * Admit a client at now_ms (the token bucket's clock), or say which limit
 * it is over.  Addresses of no family (AF_UNSPEC) are admitted and hold
 * nothing.  A refused attempt takes no token.
 */
enum clienttab_verdict clienttab_admit(struct clienttab *, const struct clienttab_limits *,
		    const struct cidr_addr *, uint64_t now_ms, struct clienttab_hold *);
/* Give a hold back; a hold that holds nothing is left alone.  Clears it. */
void		 clienttab_release(struct clienttab_hold *);
void		 clienttab_get_counts(struct clienttab *, struct clienttab_counts *);
/* "sessions_per_address", ...: the setting a verdict names. */
const char	*clienttab_verdict_name(enum clienttab_verdict);

#endif
