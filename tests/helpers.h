/*
 * Small helpers shared by the unit tests and the fuzz targets.
 */
#ifndef STP_TESTS_HELPERS_H
#define STP_TESTS_HELPERS_H

#include <stdlib.h>
#include <string.h>

/* A copy of p[0..n) in a buffer of exactly n bytes, so that ASan sees overreads. */
static inline void *
exact(const void *p, size_t n)
{
	void	*q = calloc(1, n > 0 ? n : 1);	/* zeroed: never read uninitialised */

	if (q == NULL)
		abort();
	if (n > 0)
		memcpy(q, p, n);
	return q;
}

#endif
