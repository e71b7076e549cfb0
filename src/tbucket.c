/*
 * The token bucket (tbucket.h).  Thousandths of a token, so that a rate
 * of r tokens a second is r thousandths a millisecond: integers only.
 */
#include "autoconfig.h"

#include "tbucket.h"

static uint64_t
tbucket_level(const struct tbucket *b, unsigned rate, unsigned burst, uint64_t now_ms)
{
	uint64_t	 cap = (uint64_t)burst * 1000;
	uint64_t	 elapsed = now_ms > b->last_ms ? now_ms - b->last_ms : 0;
	uint64_t	 level = b->milli < cap ? b->milli : cap;

	if (rate == 0)
		return level;
	/* no more than the time that fills it: no overflow */
	if (elapsed > cap / rate + 1)
		elapsed = cap / rate + 1;
	level += elapsed * rate;
	return level < cap ? level : cap;
}

void
tbucket_init(struct tbucket *b, unsigned burst, uint64_t now_ms)
{
	b->milli = (uint64_t)burst * 1000;
	b->last_ms = now_ms;
}

bool
tbucket_take(struct tbucket *b, unsigned rate, unsigned burst, uint64_t now_ms)
{
	b->milli = tbucket_level(b, rate, burst, now_ms);
	if (now_ms > b->last_ms)
		b->last_ms = now_ms;
	if (b->milli < 1000)
		return false;
	b->milli -= 1000;
	return true;
}

bool
tbucket_full(const struct tbucket *b, unsigned rate, unsigned burst, uint64_t now_ms)
{
	return tbucket_level(b, rate, burst, now_ms) >= (uint64_t)burst * 1000;
}
