/* Unit tests for src/tbucket.c: the token bucket, on a clock the test drives. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "tbucket.h"

/* How many takes succeed in a row at now. */
static unsigned
drain(struct tbucket *b, unsigned rate, unsigned burst, uint64_t now)
{
	unsigned n = 0;

	while (n < 10 * burst + 10 && tbucket_take(b, rate, burst, now))
		n++;
	return n;
}

static void
test_starts_full_and_refills(void **state)
{
	struct tbucket	 b;
	uint64_t	 t = 1000000;

	tbucket_init(&b, 10, t);
	assert_true(tbucket_full(&b, 5, 10, t));
	assert_int_equal(drain(&b, 5, 10, t), 10);	/* the burst */
	assert_false(tbucket_full(&b, 5, 10, t));
	/* 5 a second: one every 200 ms */
	assert_false(tbucket_take(&b, 5, 10, t + 199));
	assert_true(tbucket_take(&b, 5, 10, t + 200));
	assert_false(tbucket_take(&b, 5, 10, t + 200));
	assert_int_equal(drain(&b, 5, 10, t + 1200), 5);
	/* never more than the burst, however long it was quiet */
	assert_int_equal(drain(&b, 5, 10, t + 86400000ULL * 365), 10);
	assert_true(tbucket_full(&b, 5, 10, t + 86400000ULL * 365 + 2000));
}

static void
test_refused_attempt_takes_nothing(void **state)
{
	struct tbucket	 b;
	uint64_t	 t = 0;

	tbucket_init(&b, 1, t);
	assert_true(tbucket_take(&b, 1, 1, t));
	/* a refused attempt every 100 ms: the token still comes at 1 s */
	for (uint64_t ms = 100; ms < 1000; ms += 100)
		assert_false(tbucket_take(&b, 1, 1, t + ms));
	assert_true(tbucket_take(&b, 1, 1, t + 1000));
}

static void
test_fractions_add_up(void **state)
{
	struct tbucket	 b;
	unsigned	 got = 0;

	/* 3 a second, asked every millisecond for 10 s: 30, plus the burst */
	tbucket_init(&b, 2, 0);
	for (uint64_t ms = 0; ms <= 10000; ms++)
		got += tbucket_take(&b, 3, 2, ms);
	assert_int_equal(got, 2 + 30);
}

static void
test_clock_going_back(void **state)
{
	struct tbucket	 b;

	tbucket_init(&b, 2, 5000);
	assert_int_equal(drain(&b, 1, 2, 5000), 2);
	/* earlier than before: standing still, nothing gained, nothing lost */
	assert_false(tbucket_take(&b, 1, 2, 1000));
	assert_false(tbucket_take(&b, 1, 2, 5999));
	assert_true(tbucket_take(&b, 1, 2, 6000));
}

static void
test_changed_settings_apply(void **state)
{
	struct tbucket	 b;

	tbucket_init(&b, 100, 0);
	/* a reload lowers the burst: the bucket holds no more than the new one */
	assert_int_equal(drain(&b, 1, 3, 0), 3);
	/* and a raised rate fills faster */
	assert_false(tbucket_take(&b, 1000, 3, 0));
	assert_true(tbucket_take(&b, 1000, 3, 1));
	/* extremes do not overflow */
	tbucket_init(&b, TBUCKET_BURST_MAX, 0);
	assert_true(tbucket_take(&b, TBUCKET_RATE_MAX, TBUCKET_BURST_MAX, UINT64_MAX));
	assert_false(tbucket_full(&b, TBUCKET_RATE_MAX, TBUCKET_BURST_MAX, UINT64_MAX));
	tbucket_init(&b, TBUCKET_BURST_MAX, UINT64_MAX - 2000);
	assert_int_equal(drain(&b, TBUCKET_RATE_MAX, TBUCKET_BURST_MAX, UINT64_MAX - 2000),
	    TBUCKET_BURST_MAX);
	assert_true(tbucket_full(&b, TBUCKET_RATE_MAX, TBUCKET_BURST_MAX, UINT64_MAX));
	/* no rate: only the burst, ever */
	tbucket_init(&b, 2, 0);
	assert_int_equal(drain(&b, 0, 2, 1000000), 2);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_starts_full_and_refills),
		cmocka_unit_test(test_refused_attempt_takes_nothing),
		cmocka_unit_test(test_fractions_add_up),
		cmocka_unit_test(test_clock_going_back),
		cmocka_unit_test(test_changed_settings_apply),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
