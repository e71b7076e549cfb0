/*
 * libFuzzer target: the access rules of the configuration (src/cidr.c)
 * and the client table that counts by address and prefix
 * (src/clienttab.c, src/tbucket.c).
 *
 * The input's first line is a rule.  A rule that parses must format to
 * text that parses back to the same rule, must match its own network and
 * the last address of it, and must not match the address just past its
 * prefix (a trap otherwise).  The rest of the input drives a table of 16
 * entries: each 5 bytes are an operation and an address (admit it, or
 * give back one of the holds); at the end every hold is given back and
 * the table must count no session (a trap otherwise).
 */
#include <sys/socket.h>
#include <netinet/in.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cidr.h"
#include "clienttab.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HOLDS	32

static void
check_rule(const struct cidr_rule *r)
{
	struct cidr_rule	 again;
	struct cidr_addr	 a;
	char			 text[CIDR_FORMAT_MAX], why[160];
	unsigned		 bits;

	cidr_rule_format(r, text, sizeof(text));
	if (strlen(text) + 1 >= sizeof(text) ||
	    cidr_rule_parse(text, &again, why, sizeof(why)) != 0 ||
	    again.allow != r->allow || again.family != r->family || again.len != r->len ||
	    memcmp(again.a, r->a, sizeof(r->a)) != 0)
		__builtin_trap();
	if (r->family == AF_UNSPEC)
		return;
	bits = r->family == AF_INET ? 32 : 128;
	memset(&a, 0, sizeof(a));
	a.family = r->family;
	memcpy(a.a, r->a, sizeof(a.a));
	if (!cidr_rule_match(r, &a))
		__builtin_trap();
	for (unsigned i = r->len; i < bits; i++)	/* the last address of it */
		a.a[i / 8] |= (uint8_t)(0x80u >> (i % 8));
	if (!cidr_rule_match(r, &a))
		__builtin_trap();
	if (r->len > 0) {		/* flip the prefix's last bit: out */
		unsigned i = r->len - 1;

		a.a[i / 8] ^= (uint8_t)(0x80u >> (i % 8));
		if (cidr_rule_match(r, &a))
			__builtin_trap();
	}
}

static void
drive_table(const uint8_t *p, size_t n)
{
	static struct clienttab	*t;
	struct clienttab_limits	 l = { .per_address = 2, .per_prefix = 3, .prefix4 = 30,
	    .prefix6 = 126, .rate = 3, .burst = 2 };
	struct clienttab_hold	 h[HOLDS];
	struct clienttab_counts	 c;
	uint64_t		 now = 0;

	if (t == NULL && (t = clienttab_new(16)) == NULL)
		return;
	memset(h, 0, sizeof(h));
	for (; n >= 5; p += 5, n -= 5) {
		struct cidr_addr a = { .family = p[0] & 1 ? AF_INET6 : AF_INET };
		unsigned slot = (p[0] >> 1) % HOLDS;

		/* few distinct addresses, so that limits are reached */
		a.a[0] = p[1];
		a.a[3] = p[2] & 7;
		if (a.family == AF_INET6)
			a.a[15] = p[3] & 7;
		now += p[4];
		if (h[slot].t != NULL)
			clienttab_release(&h[slot]);
		else
			(void)clienttab_admit(t, &l, &a, now, &h[slot]);
	}
	for (int i = 0; i < HOLDS; i++)
		clienttab_release(&h[i]);
	clienttab_get_counts(t, &c);
	if (c.held != 0 || c.used > c.size)
		__builtin_trap();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char			 text[CIDR_TEXT_MAX + 16], why[160];
	struct cidr_rule	 r;
	const uint8_t		*nl = memchr(data, '\n', size);
	size_t			 n = nl ? (size_t)(nl - data) : size;

	if (n < sizeof(text)) {
		memcpy(text, data, n);
		text[n] = '\0';
		if (cidr_rule_parse(text, &r, why, sizeof(why)) == 0)
			check_rule(&r);
		else if (why[0] == '\0')
			__builtin_trap();	/* a refusal says why */
	}
	if (nl != NULL)
		drive_table(nl + 1, size - n - 1);
	return 0;
}
