/*
 * The client table (clienttab.h): a fixed pool of entries, chained in a
 * hash of fixed size, with two intrusive lists through the same links:
 * the free entries, and the idle entries in the order they were last
 * touched (the head is the oldest, evicted first).  An entry that counts
 * open sessions is on neither list, so it cannot be evicted.  Indexes are
 * stored + 1 so that 0 means none.  The hash is keyed with a random seed
 * chosen at creation, so that a client picking its addresses (a whole
 * IPv6 /64) cannot aim them all at one chain.
 */
#include "autoconfig.h"

#include <sys/random.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clienttab.h"
#include "tbucket.h"

enum ct_kind {
	CT_FREE,
	CT_ADDRESS,
	CT_PREFIX,
};

struct ct_entry {
	struct cidr_addr key;		/* a prefix's is masked */
	uint8_t		 kind;
	uint8_t		 plen;		/* CT_PREFIX: its length */
	uint32_t	 sessions;
	uint32_t	 hnext;		/* hash chain */
	uint32_t	 prev;		/* free or idle list */
	uint32_t	 next;
	struct tbucket	 bucket;	/* CT_ADDRESS */
};

struct clienttab {
	pthread_mutex_t	 lock;
	struct ct_entry	*e;		/* [size] */
	uint32_t	*heads;		/* [nheads] */
	size_t		 size;
	size_t		 nheads;	/* a power of two */
	uint64_t	 seed[2];
	uint32_t	 free_head;
	uint32_t	 idle_head;	/* the oldest */
	uint32_t	 idle_tail;
	size_t		 used;
	size_t		 held;
	unsigned long long evicted;
};

#define E(t, i)	(&(t)->e[(i) - 1])

struct clienttab *
clienttab_new(size_t size)
{
	struct clienttab	*t;

	if (size < CLIENTTAB_SIZE_MIN)
		size = CLIENTTAB_SIZE_MIN;
	if (size > CLIENTTAB_SIZE_MAX)
		size = CLIENTTAB_SIZE_MAX;
	if ((t = calloc(1, sizeof(*t))) == NULL)
		return NULL;
	t->size = size;
	for (t->nheads = 1; t->nheads < size; t->nheads <<= 1)
		;
	t->e = calloc(size, sizeof(*t->e));
	t->heads = calloc(t->nheads, sizeof(*t->heads));
	if (t->e == NULL || t->heads == NULL || pthread_mutex_init(&t->lock, NULL) != 0) {
		free(t->e);
		free(t->heads);
		free(t);
		return NULL;
	}
	if (getrandom(t->seed, sizeof(t->seed), GRND_NONBLOCK) != (ssize_t)sizeof(t->seed)) {
		t->seed[0] = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)t;
		t->seed[1] = (uint64_t)clock() * 0x9e3779b97f4a7c15ULL;
	}
	/* every entry free, in order */
	for (size_t i = 1; i <= size; i++)
		t->e[i - 1].next = i < size ? (uint32_t)(i + 1) : 0;
	t->free_head = 1;
	return t;
}

void
clienttab_free(struct clienttab *t)
{
	if (t == NULL)
		return;
	pthread_mutex_destroy(&t->lock);
	free(t->e);
	free(t->heads);
	free(t);
}

size_t
clienttab_size(const struct clienttab *t)
{
	return t->size;
}

static uint64_t
mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

static size_t
ct_hash(const struct clienttab *t, const struct cidr_addr *k, unsigned kind, unsigned plen)
{
	uint64_t	 w[2], h;

	memcpy(w, k->a, sizeof(w));
	h = mix(t->seed[0] ^ ((uint64_t)k->family << 16 | kind << 8 | plen));
	h = mix(h ^ w[0] ^ t->seed[1]);
	h = mix(h ^ w[1]);
	return (size_t)(h & (t->nheads - 1));
}

static bool
ct_same(const struct ct_entry *e, const struct cidr_addr *k, unsigned kind, unsigned plen)
{
	return e->kind == kind && e->plen == plen && e->key.family == k->family &&
	    memcmp(e->key.a, k->a, sizeof(k->a)) == 0;
}

static void
idle_unlink(struct clienttab *t, uint32_t i)
{
	struct ct_entry	*e = E(t, i);

	if (e->prev)
		E(t, e->prev)->next = e->next;
	else
		t->idle_head = e->next;
	if (e->next)
		E(t, e->next)->prev = e->prev;
	else
		t->idle_tail = e->prev;
	e->prev = e->next = 0;
}

static void
idle_append(struct clienttab *t, uint32_t i)
{
	struct ct_entry	*e = E(t, i);

	e->next = 0;
	e->prev = t->idle_tail;
	if (t->idle_tail)
		E(t, t->idle_tail)->next = i;
	else
		t->idle_head = i;
	t->idle_tail = i;
}

static bool
idle_listed(const struct clienttab *t, uint32_t i)
{
	const struct ct_entry *e = E(t, i);

	return e->prev != 0 || t->idle_head == i;
}

/* Take entry i out of its hash chain. */
static void
chain_unlink(struct clienttab *t, uint32_t i)
{
	struct ct_entry	*e = E(t, i);
	uint32_t	*p = &t->heads[ct_hash(t, &e->key, e->kind, e->plen)];

	while (*p != 0 && *p != i)
		p = &E(t, *p)->hnext;
	if (*p == i)
		*p = e->hnext;
	e->hnext = 0;
}

/*
 * The entry of a key, made if need be from a free entry or the oldest
 * idle one; 0 when every entry holds sessions.  The entry is taken off
 * the idle list while the caller works on it (ct_settle puts it back).
 */
static uint32_t
ct_get(struct clienttab *t, const struct cidr_addr *k, unsigned kind, unsigned plen,
    unsigned burst, uint64_t now_ms)
{
	size_t		 h = ct_hash(t, k, kind, plen);
	uint32_t	 i;
	struct ct_entry	*e;

	for (i = t->heads[h]; i != 0; i = E(t, i)->hnext)
		if (ct_same(E(t, i), k, kind, plen)) {
			if (idle_listed(t, i))
				idle_unlink(t, i);
			return i;
		}
	if ((i = t->free_head) != 0) {
		t->free_head = E(t, i)->next;
		t->used++;
	} else if ((i = t->idle_head) != 0) {
		idle_unlink(t, i);
		chain_unlink(t, i);
		t->evicted++;
	} else
		return 0;
	e = E(t, i);
	memset(e, 0, sizeof(*e));
	e->key = *k;
	e->kind = (uint8_t)kind;
	e->plen = (uint8_t)plen;
	tbucket_init(&e->bucket, burst, now_ms);
	e->hnext = t->heads[h];
	t->heads[h] = i;
	return i;
}

/* An entry the caller is done with: idle again (the newest) if it holds no session. */
static void
ct_settle(struct clienttab *t, uint32_t i)
{
	if (i != 0 && E(t, i)->sessions == 0 && !idle_listed(t, i))
		idle_append(t, i);
}

enum clienttab_verdict
clienttab_admit(struct clienttab *t, const struct clienttab_limits *l,
    const struct cidr_addr *addr, uint64_t now_ms, struct clienttab_hold *hold)
{
	enum clienttab_verdict	 v = CLIENTTAB_OK;
	struct cidr_addr	 net;
	uint32_t		 a = 0, p = 0;
	unsigned		 plen;

	memset(hold, 0, sizeof(*hold));
	if (addr->family != AF_INET && addr->family != AF_INET6)
		return CLIENTTAB_OK;
	if (l->per_address == 0 && l->per_prefix == 0 && l->rate == 0)
		return CLIENTTAB_OK;
	plen = addr->family == AF_INET ? l->prefix4 : l->prefix6;
	cidr_addr_mask(addr, plen, &net);

	pthread_mutex_lock(&t->lock);
	if ((l->per_address != 0 || l->rate != 0) &&
	    (a = ct_get(t, addr, CT_ADDRESS, 0, l->burst, now_ms)) == 0)
		v = CLIENTTAB_FULL;
	if (v == CLIENTTAB_OK && l->per_prefix != 0 &&
	    (p = ct_get(t, &net, CT_PREFIX, plen, 0, now_ms)) == 0)
		v = CLIENTTAB_FULL;
	if (v == CLIENTTAB_OK && l->per_address != 0 && E(t, a)->sessions >= l->per_address)
		v = CLIENTTAB_ADDRESS;
	if (v == CLIENTTAB_OK && l->per_prefix != 0 && E(t, p)->sessions >= l->per_prefix)
		v = CLIENTTAB_PREFIX;
	/* last: a refused attempt takes no token */
	if (v == CLIENTTAB_OK && l->rate != 0 &&
	    !tbucket_take(&E(t, a)->bucket, l->rate, l->burst, now_ms))
		v = CLIENTTAB_RATE;
	if (v == CLIENTTAB_OK) {
		if (a != 0)
			E(t, a)->sessions++;
		if (p != 0)
			E(t, p)->sessions++;
		t->held++;
		*hold = (struct clienttab_hold){ .t = t, .addr = a, .prefix = p };
	}
	ct_settle(t, a);
	ct_settle(t, p);
	pthread_mutex_unlock(&t->lock);
	return v;
}

void
clienttab_release(struct clienttab_hold *hold)
{
	struct clienttab	*t = hold->t;
	uint32_t		 ix[2] = { hold->addr, hold->prefix };

	if (t == NULL)
		return;
	pthread_mutex_lock(&t->lock);
	for (int k = 0; k < 2; k++) {
		if (ix[k] == 0 || E(t, ix[k])->sessions == 0)
			continue;
		E(t, ix[k])->sessions--;
		ct_settle(t, ix[k]);
	}
	t->held--;
	pthread_mutex_unlock(&t->lock);
	memset(hold, 0, sizeof(*hold));
}

void
clienttab_get_counts(struct clienttab *t, struct clienttab_counts *c)
{
	pthread_mutex_lock(&t->lock);
	c->size = t->size;
	c->used = t->used;
	c->held = t->held;
	c->evicted = t->evicted;
	pthread_mutex_unlock(&t->lock);
}

const char *
clienttab_verdict_name(enum clienttab_verdict v)
{
	switch (v) {
	case CLIENTTAB_OK:
		return "none";
	case CLIENTTAB_ADDRESS:
		return "sessions_per_address";
	case CLIENTTAB_PREFIX:
		return "sessions_per_prefix";
	case CLIENTTAB_RATE:
		return "new_per_second";
	case CLIENTTAB_FULL:
		return "table_size";
	}
	return "none";
}
