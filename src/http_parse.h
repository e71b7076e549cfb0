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
#define HTTP_TLS_TOKEN_MAX	16	/* "TLS/1.2": longer ones do not qualify */

struct http_request {
	const char	*method;
	size_t		 method_len;
	const char	*target;
	size_t		 target_len;
	int		 minor;		/* HTTP/1.minor */
	size_t		 head_len;	/* the head with its empty line */
	bool		 upgrade_tls;	/* Upgrade lists TLS/1.x, Connection lists upgrade */
	/* the first TLS/1.x token of the Upgrade fields, as "TLS/1.x", or "" */
	char		 tls_token[HTTP_TLS_TOKEN_MAX + 1];
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

/*
 * The head of a request that asked for TLS as the backend must get it
 * inside TLS (RFC 2817 section 3.3): without its hop-by-hop fields (RFC
 * 9110 section 7.6.1), that is every Connection and Upgrade field and
 * every field that a Connection field names, so that a backend that knows
 * RFC 2817 itself does not upgrade a second time.  Every other line is
 * copied byte for byte with its own line ending; empty lines before the
 * request line are dropped.
 *
 * head[0..len) is one whole head, up to and with the empty line that ends
 * it, and nothing after it (http_request.head_len bytes that
 * http_parse_request() accepted).  PARSE_OK with out[0..*outlen) written,
 * and *outlen <= len; PARSE_TOO_LONG if the result does not fit in outsz
 * bytes (never when outsz >= len) or the head has more than
 * HTTP_FIELDS_MAX fields; PARSE_MALFORMED if head is not one whole head,
 * or a Connection field is not a list of tokens.  out and *outlen are
 * written only with PARSE_OK.
 */
enum parse_result http_strip_hop_by_hop(const char *head, size_t len, char *out,
		    size_t outsz, size_t *outlen);

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
