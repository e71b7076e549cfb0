/*
 * libFuzzer target: HTTP request heads, CONNECT authorities and the
 * connect_allow rules (src/http_parse.c).
 */
#include <stddef.h>
#include <stdint.h>

#include "http_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char		*rules[] = { "db.internal:5432", "*.example.com:443", "[::1]:8443" };
	struct http_request	 r;
	struct addr		 a;
	int			 status = 0;

	if (http_parse_request((const char *)data, size, &r, &status) == PARSE_OK) {
		if (r.head_len > size)
			__builtin_trap();
		if (http_is_connect(&r) && http_authority_parse(r.target, r.target_len, &a) == 0)
			(void)http_connect_allowed(rules, 3, &a);
	} else if (status != 0 && status != 400 && status != 414 && status != 431 && status != 505)
		__builtin_trap();
	return 0;
}
