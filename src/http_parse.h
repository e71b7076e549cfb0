/*
 * HTTP/1.1 request heads as pure functions (RFC 9110, RFC 9112): the
 * request line, the few header fields the proxy acts on, CONNECT
 * authorities (section 9.3.6) and the connect_allow rules.
 */
#ifndef STP_HTTP_PARSE_H
#define STP_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#include "parse.h"
#include "util.h"

#define HTTP_HEAD_MAX		16384	/* SPEC: the header block, else 431 */
#define HTTP_REQUEST_LINE_MAX	8192	/* else 414 */
#define HTTP_FIELDS_MAX		100	/* header fields, else 431 */

struct http_request {
	const char	*method;
	size_t		 method_len;
	const char	*target;
	size_t		 target_len;
	int		 minor;		/* HTTP/1.minor */
	size_t		 head_len;	/* the head with its empty line */
	bool		 upgrade_tls;	/* Upgrade: TLS/1.0 and Connection: upgrade */
	bool		 has_body;	/* Content-Length > 0, or Transfer-Encoding */
};

/*
 * The request head at the start of p[0..len).  PARSE_OK with *out filled;
 * PARSE_NEED_MORE; or an error with *status the response code to send:
 * 400 malformed, 414 request line too long, 431 head too large, 505 not
 * HTTP/1.x.  *out is written only with PARSE_OK.
 */
enum parse_result http_parse_request(const char *p, size_t len,
		    struct http_request *out, int *status);

/* True if the method is exactly "CONNECT" (methods are case-sensitive). */
bool	http_is_connect(const struct http_request *);

/*
 * A CONNECT request-target in authority form, "host:port" or
 * "[v6]:port".  0, or -1 if it is not one.
 */
int	http_authority_parse(const char *target, size_t len, struct addr *out);

/*
 * Whether a CONNECT target matches a rule: "host:port" exactly (host
 * without regard to case), or "*.example.com:port", which matches any
 * name ending in ".example.com" but not "example.com" itself.
 */
bool	http_connect_rule_match(const char *rule, const struct addr *target);
bool	http_connect_allowed(char *const *rules, size_t n, const struct addr *target);

/* The reason phrase of the codes the proxy sends. */
const char *http_reason(int status);

#endif
