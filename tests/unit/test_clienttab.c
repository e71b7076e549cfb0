/*
 * Unit tests for src/clienttab.c: the limits, the bounded pool, eviction
 * of idle entries only, and holds given back exactly.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "clienttab.h"

static struct cidr_addr
v4(const char *text)
{
	struct cidr_addr a = { .family = AF_INET };

	assert_int_equal(inet_pton(AF_INET, text, a.a), 1);
	return a;
}

static struct cidr_addr
v6(const char *text)
{
	struct cidr_addr a = { .family = AF_INET6 };

	assert_int_equal(inet_pton(AF_INET6, text, a.a), 1);
	return a;
}

/* The n-th address of 10.0.0.0/8, one per /24 unless same24 */
static struct cidr_addr
nth(unsigned n)
{
	struct cidr_addr a = { .family = AF_INET };

	a.a[0] = 10;
	a.a[1] = (uint8_t)(n >> 16);
	a.a[2] = (uint8_t)(n >> 8);
	a.a[3] = (uint8_t)n;
	return a;
}

static struct clienttab_counts
counts(struct clienttab *t)
{
	struct clienttab_counts c;

	clienttab_get_counts(t, &c);
	return c;
}

static void
test_per_address(void **state)
{
	struct clienttab	*t = clienttab_new(64);
	struct clienttab_limits	 l = { .per_address = 2, .prefix4 = 24, .prefix6 = 64 };
	struct clienttab_hold	 h[4];
	struct cidr_addr	 a = v4("192.0.2.7"), b = v4("192.0.2.8");

	assert_non_null(t);
	assert_int_equal(clienttab_admit(t, &l, &a, 0, &h[0]), CLIENTTAB_OK);
	assert_int_equal(clienttab_admit(t, &l, &a, 0, &h[1]), CLIENTTAB_OK);
	assert_int_equal(clienttab_admit(t, &l, &a, 0, &h[2]), CLIENTTAB_ADDRESS);
	assert_null(h[2].t);		/* a refusal holds nothing */
	assert_int_equal(clienttab_admit(t, &l, &b, 0, &h[3]), CLIENTTAB_OK);
	assert_int_equal(counts(t).held, 3);
	clienttab_release(&h[0]);
	assert_null(h[0].t);
	clienttab_release(&h[0]);	/* a second release of a cleared hold: nothing */
	clienttab_release(&h[2]);
	assert_int_equal(counts(t).held, 2);
	assert_int_equal(clienttab_admit(t, &l, &a, 0, &h[0]), CLIENTTAB_OK);
	for (int i = 0; i < 4; i++)
		clienttab_release(&h[i]);
	assert_int_equal(counts(t).held, 0);
	clienttab_free(t);
}

static void
test_per_prefix(void **state)
{
	struct clienttab	*t = clienttab_new(64);
	struct clienttab_limits	 l = { .per_prefix = 3, .prefix4 = 24, .prefix6 = 48 };
	struct clienttab_hold	 h[8];
	struct cidr_addr	 a;

	a = v4("192.0.2.1");
	assert_int_equal(clienttab_admit(t, &l, &a, 0, &h[0]), CLIENTTAB_OK);
	a = v4("192.0.2.2");
	assert_int_equal(clienttab_admit(t, &l, &a, 0, &h[1]), CLIENTTAB_OK);
	a = v4("192.0.2.254");
	assert_int_equal(clienttab_admit(t, &l, &a, 0, &h[2]), CLIENTTAB_OK);
	a = v4("192.0.2.9");
	assert_int_equal(clienttab_admit(t, &l, &a, 0, &h[3]), CLIENTTAB_PREFIX);
	a = v4("192.0.3.9");		/* the next /24 */
	assert_int_equal(clienttab_admit(t, &l, &a, 0, &h[3]), CLIENTTAB_OK);
	/* IPv6 by /48 */
	a = v6("2001:db8:1:1::1");
	assert_int_equal(clienttab_admit(t, &l, &a, 0, &h[4]), CLIENTTAB_OK);
	a = v6("2001:db8:1:ffff::2");
	assert_int_equal(clienttab_admit(t, &l, &a, 0, &h[5]), CLIENTTAB_OK);
	a = v6("2001:db8:1::3");
	assert_int_equal(clienttab_admit(t, &l, &a, 0, &h[6]), CLIENTTAB_OK);
	a = v6("2001:db8:1:8000::4");
	assert_int_equal(clienttab_admit(t, &l, &a, 0, &h[7]), CLIENTTAB_PREFIX);
	/* prefixes only: no entry per address */
	assert_int_equal(counts(t).used, 3);
	clienttab_release(&h[1]);
	a = v4("192.0.2.9");
	assert_int_equal(clienttab_admit(t, &l, &a, 0, &h[1]), CLIENTTAB_OK);
	for (int i = 0; i < 7; i++)
		clienttab_release(&h[i]);
	assert_int_equal(counts(t).held, 0);
	clienttab_free(t);
}

static void
test_rate(void **state)
{
	struct clienttab	*t = clienttab_new(64);
	struct clienttab_limits	 l = { .per_address = 3, .rate = 2, .burst = 4,
	    .prefix4 = 24, .prefix6 = 64 };
	struct clienttab_hold	 h;
	struct cidr_addr	 a = v4("198.51.100.1");
	unsigned		 ok = 0;

	/* the burst, each session ending at once */
	for (int i = 0; i < 10; i++)
		if (clienttab_admit(t, &l, &a, 1000, &h) == CLIENTTAB_OK) {
			ok++;
			clienttab_release(&h);
		}
	assert_int_equal(ok, 4);
	assert_int_equal(clienttab_admit(t, &l, &a, 1000, &h), CLIENTTAB_RATE);
	/* 2 a second */
	assert_int_equal(clienttab_admit(t, &l, &a, 1499, &h), CLIENTTAB_RATE);
	assert_int_equal(clienttab_admit(t, &l, &a, 1500, &h), CLIENTTAB_OK);
	clienttab_release(&h);
	/* a refusal by another limit takes no token */
	{
		struct clienttab_limits	 one = l;
		struct clienttab_hold	 held;

		one.per_address = 1;
		assert_int_equal(clienttab_admit(t, &one, &a, 100000, &held), CLIENTTAB_OK);
		for (int i = 0; i < 20; i++)
			assert_int_equal(clienttab_admit(t, &one, &a, 100000, &h), CLIENTTAB_ADDRESS);
		clienttab_release(&held);
		ok = 0;
		for (int i = 0; i < 10; i++)
			if (clienttab_admit(t, &one, &a, 100000, &h) == CLIENTTAB_OK) {
				ok++;
				clienttab_release(&h);
			}
		assert_int_equal(ok, 3);	/* the burst of 4, less the one held */
	}
	clienttab_free(t);
}

/*
 * The pool is bounded: a flood of new addresses evicts idle entries,
 * never those holding sessions, and once every entry holds sessions a
 * new address is refused.
 */
static void
test_flood_never_evicts_holders(void **state)
{
	struct clienttab	*t = clienttab_new(32);
	struct clienttab_limits	 l = { .per_address = 1, .prefix4 = 24, .prefix6 = 64 };
	struct clienttab_hold	 held[8], h;
	struct cidr_addr	 a;

	for (unsigned i = 0; i < 8; i++) {
		a = nth(i);
		assert_int_equal(clienttab_admit(t, &l, &a, 0, &held[i]), CLIENTTAB_OK);
	}
	/* 10,000 new addresses, each ending at once */
	for (unsigned i = 100; i < 10100; i++) {
		a = nth(i);
		assert_int_equal(clienttab_admit(t, &l, &a, 0, &h), CLIENTTAB_OK);
		clienttab_release(&h);
	}
	assert_int_equal(counts(t).used, 32);
	assert_true(counts(t).evicted >= 10000 - 24);
	/* the holders are still counted */
	for (unsigned i = 0; i < 8; i++) {
		a = nth(i);
		assert_int_equal(clienttab_admit(t, &l, &a, 0, &h), CLIENTTAB_ADDRESS);
	}
	/* fill the rest with holders: then a new address finds no room */
	{
		struct clienttab_hold more[24];

		for (unsigned i = 0; i < 24; i++) {
			a = nth(20000 + i);
			assert_int_equal(clienttab_admit(t, &l, &a, 0, &more[i]), CLIENTTAB_OK);
		}
		a = nth(30000);
		assert_int_equal(clienttab_admit(t, &l, &a, 0, &h), CLIENTTAB_FULL);
		assert_int_equal(counts(t).held, 32);
		clienttab_release(&more[5]);
		assert_int_equal(clienttab_admit(t, &l, &a, 0, &h), CLIENTTAB_OK);
		clienttab_release(&h);
		for (unsigned i = 0; i < 24; i++)
			clienttab_release(&more[i]);
	}
	for (unsigned i = 0; i < 8; i++)
		clienttab_release(&held[i]);
	assert_int_equal(counts(t).held, 0);
	clienttab_free(t);
}

/* The oldest idle entry goes first: a recently seen one keeps its bucket. */
static void
test_oldest_idle_evicted_first(void **state)
{
	struct clienttab	*t = clienttab_new(16);
	struct clienttab_limits	 l = { .rate = 1, .burst = 1, .prefix4 = 24, .prefix6 = 64 };
	struct clienttab_hold	 h;
	struct cidr_addr	 a, keep = v4("203.0.113.5");

	assert_int_equal(clienttab_admit(t, &l, &keep, 0, &h), CLIENTTAB_OK);
	clienttab_release(&h);
	for (unsigned i = 0; i < 15; i++) {
		a = nth(i);
		assert_int_equal(clienttab_admit(t, &l, &a, 0, &h), CLIENTTAB_OK);
		clienttab_release(&h);
	}
	/* keep's bucket is empty; touching it makes it the newest */
	assert_int_equal(clienttab_admit(t, &l, &keep, 0, &h), CLIENTTAB_RATE);
	for (unsigned i = 100; i < 115; i++) {
		a = nth(i);
		assert_int_equal(clienttab_admit(t, &l, &a, 0, &h), CLIENTTAB_OK);
		clienttab_release(&h);
	}
	assert_int_equal(clienttab_admit(t, &l, &keep, 0, &h), CLIENTTAB_RATE);
	/* sixteen more and it is gone, with its bucket */
	for (unsigned i = 200; i < 216; i++) {
		a = nth(i);
		assert_int_equal(clienttab_admit(t, &l, &a, 0, &h), CLIENTTAB_OK);
		clienttab_release(&h);
	}
	assert_int_equal(clienttab_admit(t, &l, &keep, 0, &h), CLIENTTAB_OK);
	clienttab_release(&h);
	clienttab_free(t);
}

/* Address and prefix entries share the pool; the one being admitted is never its own victim. */
static void
test_address_and_prefix_in_one_pool(void **state)
{
	struct clienttab	*t = clienttab_new(16);
	struct clienttab_limits	 l = { .per_address = 1, .per_prefix = 2, .prefix4 = 24,
	    .prefix6 = 64 };
	struct clienttab_hold	 h[8], x;
	struct cidr_addr	 a;

	/* 8 holders in 8 prefixes: 16 entries, all holding */
	for (unsigned i = 0; i < 8; i++) {
		a = nth(i << 8);
		assert_int_equal(clienttab_admit(t, &l, &a, 0, &h[i]), CLIENTTAB_OK);
	}
	assert_int_equal(counts(t).used, 16);
	a = nth(9 << 8);
	assert_int_equal(clienttab_admit(t, &l, &a, 0, &x), CLIENTTAB_FULL);
	/* a second address in a held prefix needs one entry: none idle */
	a = nth(1);
	assert_int_equal(clienttab_admit(t, &l, &a, 0, &x), CLIENTTAB_FULL);
	clienttab_release(&h[7]);	/* two idle entries */
	a = nth(9 << 8);
	assert_int_equal(clienttab_admit(t, &l, &a, 0, &x), CLIENTTAB_OK);
	clienttab_release(&x);
	for (unsigned i = 0; i < 7; i++)
		clienttab_release(&h[i]);
	assert_int_equal(counts(t).held, 0);
	clienttab_free(t);
}

static void
test_unlimited_and_other_families(void **state)
{
	struct clienttab	*t = clienttab_new(1);	/* clamped to the minimum */
	struct clienttab_limits	 none = { .prefix4 = 24, .prefix6 = 64 };
	struct clienttab_limits	 l = { .per_address = 1, .prefix4 = 24, .prefix6 = 64 };
	struct clienttab_hold	 h;
	struct cidr_addr	 a = v4("192.0.2.1"), u = { .family = AF_UNSPEC };

	assert_int_equal(clienttab_size(t), CLIENTTAB_SIZE_MIN);
	assert_int_equal(clienttab_admit(t, &none, &a, 0, &h), CLIENTTAB_OK);
	assert_null(h.t);
	assert_int_equal(clienttab_admit(t, &l, &u, 0, &h), CLIENTTAB_OK);
	assert_null(h.t);
	assert_int_equal(counts(t).used, 0);
	clienttab_free(t);
}

/* Four threads admitting and releasing the same addresses: the counts end at zero. */
struct worker_arg {
	struct clienttab	*t;
	unsigned		 seed;
	unsigned		 refused;
};

static void *
hammer(void *arg)
{
	struct worker_arg	*w = arg;
	struct clienttab_limits	 l = { .per_address = 2, .per_prefix = 6, .prefix4 = 30,
	    .prefix6 = 64 };
	struct clienttab_hold	 h[16];
	unsigned		 x = w->seed;

	memset(h, 0, sizeof(h));
	for (unsigned i = 0; i < 20000; i++) {
		unsigned slot = (x = x * 1103515245 + 12345) >> 16 & 15;
		struct cidr_addr a = nth(x >> 20 & 63);

		if (h[slot].t != NULL)
			clienttab_release(&h[slot]);
		else if (clienttab_admit(w->t, &l, &a, i, &h[slot]) != CLIENTTAB_OK)
			w->refused++;
	}
	for (int i = 0; i < 16; i++)
		clienttab_release(&h[i]);
	return NULL;
}

static void
test_threads_release_exactly(void **state)
{
	struct clienttab	*t = clienttab_new(48);
	struct worker_arg	 args[4];
	pthread_t		 th[4];

	for (int i = 0; i < 4; i++) {
		args[i] = (struct worker_arg){ .t = t, .seed = 7u + (unsigned)i };
		assert_int_equal(pthread_create(&th[i], NULL, hammer, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(counts(t).held, 0);
	assert_true(args[0].refused > 0);
	/* every entry is idle again: a full table of new holders fits */
	{
		struct clienttab_limits	 l = { .per_address = 1, .prefix4 = 24, .prefix6 = 64 };
		struct clienttab_hold	 h[48], x;
		struct cidr_addr	 a;

		for (unsigned i = 0; i < 48; i++) {
			a = nth(1000 + i);
			assert_int_equal(clienttab_admit(t, &l, &a, 0, &h[i]), CLIENTTAB_OK);
		}
		a = nth(5000);
		assert_int_equal(clienttab_admit(t, &l, &a, 0, &x), CLIENTTAB_FULL);
		for (unsigned i = 0; i < 48; i++)
			clienttab_release(&h[i]);
	}
	clienttab_free(t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_per_address),
		cmocka_unit_test(test_per_prefix),
		cmocka_unit_test(test_rate),
		cmocka_unit_test(test_flood_never_evicts_holders),
		cmocka_unit_test(test_oldest_idle_evicted_first),
		cmocka_unit_test(test_address_and_prefix_in_one_pool),
		cmocka_unit_test(test_unlimited_and_other_families),
		cmocka_unit_test(test_threads_release_exactly),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
