/*
 * A token bucket over a clock the caller passes in (milliseconds, any
 * origin, never going back; a clock that does is taken as standing still).
 * It starts full (burst tokens), gains rate tokens a second up to burst,
 * and an attempt that finds less than one token takes nothing.  Rate and
 * burst are given at each call, so that a reload that changes them applies
 * to buckets already filling.  Pure: no locking, no allocation.
 */
#ifndef STP_TBUCKET_H
#define STP_TBUCKET_H

#include <stdbool.h>
#include <stdint.h>

#define TBUCKET_RATE_MAX	1000000u	/* tokens a second */
#define TBUCKET_BURST_MAX	1000000u

struct tbucket {
	uint64_t	 milli;		/* thousandths of a token */
	uint64_t	 last_ms;	/* when milli was last brought up to date */
};

void	 tbucket_init(struct tbucket *, unsigned burst, uint64_t now_ms);
/* Take one token if there is one. */
bool	 tbucket_take(struct tbucket *, unsigned rate, unsigned burst, uint64_t now_ms);
/* True when the bucket is full again at now_ms (nothing worth keeping). */
bool	 tbucket_full(const struct tbucket *, unsigned rate, unsigned burst, uint64_t now_ms);

#endif
