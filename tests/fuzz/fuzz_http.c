/*
 * libFuzzer target: HTTP request heads, CONNECT authorities, the
 * connect_allow rules, and the head of an upgrade without its hop-by-hop
 * fields (src/http_parse.c).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "http_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * A head the parser took, stripped: it still parses, as a head of the
 * stripped length, and no longer asks for an upgrade.
 */
static void
check_strip(const char *p, const struct http_request *r)
{
	static char		 out[HTTP_HEAD_MAX];
	struct http_request	 again;
	size_t			 outlen = 0;
	int			 status = 0;

	switch (http_strip_hop_by_hop(p, r->head_len, out, sizeof(out), &outlen)) {
	case PARSE_OK:
		if (outlen > r->head_len)
			__builtin_trap();
		if (http_parse_request(out, outlen, &again, &status) != PARSE_OK ||
		    again.head_len != outlen || again.upgrade_tls ||
		    (again.has_body && !r->has_body))
			__builtin_trap();
		break;
	case PARSE_MALFORMED:	/* a Connection field that is not a token list */
		break;
	default:
		__builtin_trap();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char		*rules[] = { "db.internal:5432", "*.example.com:443", "[::1]:8443" };
	static char		 out[HTTP_HEAD_MAX];
	struct http_request	 r;
	struct addr		 a;
	size_t			 outlen;
	int			 status = 0;

	if (http_parse_request((const char *)data, size, &r, &status) == PARSE_OK) {
		if (r.head_len > size || r.head_len > HTTP_HEAD_MAX ||
		    strlen(r.tls_token) > HTTP_TLS_TOKEN_MAX ||
		    (r.upgrade_tls && strncmp(r.tls_token, "TLS/1.", 6) != 0))
			__builtin_trap();
		if (http_is_connect(&r) && http_authority_parse(r.target, r.target_len, &a) == 0)
			(void)http_connect_allowed(rules, 3, &a);
		check_strip((const char *)data, &r);
	} else if (status != 0 && status != 400 && status != 414 && status != 431 && status != 505)
		__builtin_trap();
	/* and on whatever the bytes are, bounded by its out buffer */
	if (http_strip_hop_by_hop((const char *)data, size, out, sizeof(out), &outlen) == PARSE_OK &&
	    (outlen > size || outlen > sizeof(out)))
		__builtin_trap();
	return 0;
}
