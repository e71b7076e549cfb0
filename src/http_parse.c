/*
 * HTTP request heads: see http_parse.h.
 */
#include "autoconfig.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_parse.h"
#include "line_parse.h"

/* tchar (RFC 9110 section 5.6.2) */
static bool
is_tchar(unsigned char c)
{
	return isalnum(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool
is_token(const char *p, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!is_tchar((unsigned char)p[i]))
			return false;
	return true;
}

/*
 * The next element of a comma-separated list (RFC 9110 section 5.6.1)
 * from *pos on, without the whitespace around it; empty elements are
 * skipped, as recipients must.  False at the end of the list.
 */
static bool
list_next(const char *v, size_t len, size_t *pos, const char **elem, size_t *elen)
{
	size_t	 i = *pos, start, end;

	for (;;) {
		while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		if (i >= len) {
			*pos = i;
			return false;
		}
		start = i;
		while (i < len && v[i] != ',')
			i++;
		end = i;
		while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
			end--;
		if (end > start)
			break;
	}
	*pos = i;
	*elem = v + start;
	*elen = end - start;
	return true;
}

/* Does the comma-separated list hold this token (ignoring case)? */
static bool
list_has(const char *v, size_t len, const char *token, size_t tl)
{
	const char	*e;
	size_t		 el, pos = 0;

	while (list_next(v, len, &pos, &e, &el))
		if (el == tl && strncasecmp(e, token, tl) == 0)
			return true;
	return false;
}

/*
 * A protocol of an Upgrade list that means TLS: "TLS/1." and a version
 * number, ignoring case.  RFC 2817 section 3.2 names TLS/1.0; CUPS offers
 * "TLS/1.2,TLS/1.1,TLS/1.0".  The handshake, not the token, settles the
 * version.
 */
static bool
is_tls_token(const char *p, size_t len)
{
	if (len < 7 || len > HTTP_TLS_TOKEN_MAX || strncasecmp(p, "TLS/1.", 6) != 0)
		return false;
	for (size_t i = 6; i < len; i++)
		if (!isdigit((unsigned char)p[i]))
			return false;
	return true;
}

/* The first TLS/1.x protocol of an Upgrade value, as "TLS/1.x", into tok. */
static void
upgrade_find_tls(const char *v, size_t len, char tok[HTTP_TLS_TOKEN_MAX + 1])
{
	const char	*e;
	size_t		 el, pos = 0;

	while (list_next(v, len, &pos, &e, &el)) {
		if (is_tls_token(e, el)) {
			memcpy(tok, "TLS/1.", 6);
			memcpy(tok + 6, e + 6, el - 6);
			tok[el] = '\0';
			return;
		}
	}
}

/*
 * A field line (its text, without the line ending): the name, a token
 * right before the colon, and the value without the whitespace around
 * it, holding no control character but HTAB.  No folding (obs-fold) and
 * no space before the colon (RFC 9112 section 5).
 */
static bool
field_split(const char *line, size_t textlen, size_t *nlen, size_t *voff, size_t *vlen)
{
	const char	*colon;
	size_t		 vstart, vend;

	if (textlen == 0 || line[0] == ' ' || line[0] == '\t')
		return false;
	if ((colon = memchr(line, ':', textlen)) == NULL)
		return false;
	*nlen = (size_t)(colon - line);
	if (!is_token(line, *nlen))
		return false;
	vstart = *nlen + 1;
	while (vstart < textlen && (line[vstart] == ' ' || line[vstart] == '\t'))
		vstart++;
	vend = textlen;
	while (vend > vstart && (line[vend - 1] == ' ' || line[vend - 1] == '\t'))
		vend--;
	for (size_t i = vstart; i < vend; i++)
		if ((unsigned char)line[i] < ' ' && line[i] != '\t')
			return false;
	*voff = vstart;
	*vlen = vend - vstart;
	return true;
}

/* Empty lines before the request line, at most 4 bytes (RFC 9112 section 2.2). */
static size_t
skip_empty_lines(const char *p, size_t len)
{
	size_t	 off = 0;

	while (off < len && off < 4 && (p[off] == '\r' || p[off] == '\n'))
		off++;
	return off;
}

static bool
name_is(const char *n, size_t len, const char *name)
{
	return strlen(name) == len && strncasecmp(n, name, len) == 0;
}

static enum parse_result
fail(int *status, int code)
{
	*status = code;
	return code == 431 ? PARSE_TOO_LONG : PARSE_MALFORMED;
}

static enum parse_result
parse_request_line(const char *p, size_t len, struct http_request *r, int *status)
{
	const char	*sp1 = memchr(p, ' ', len), *sp2;

	if (sp1 == NULL)
		return fail(status, 400);
	sp2 = memchr(sp1 + 1, ' ', len - (size_t)(sp1 + 1 - p));
	if (sp2 == NULL)
		return fail(status, 400);
	r->method = p;
	r->method_len = (size_t)(sp1 - p);
	r->target = sp1 + 1;
	r->target_len = (size_t)(sp2 - sp1 - 1);
	if (!is_token(r->method, r->method_len) || r->target_len == 0)
		return fail(status, 400);
	for (size_t i = 0; i < r->target_len; i++)
		if (r->target[i] <= ' ' || r->target[i] == 0x7f)
			return fail(status, 400);
	const char	*ver = sp2 + 1;
	size_t		 vlen = len - (size_t)(ver - p);

	if (vlen != 8 || strncmp(ver, "HTTP/", 5) != 0 || !isdigit((unsigned char)ver[5]) ||
	    ver[6] != '.' || !isdigit((unsigned char)ver[7]))
		return fail(status, 400);
	if (ver[5] != '1')
		return fail(status, 505);
	r->minor = ver[7] - '0';
	return PARSE_OK;
}

enum parse_result
http_parse_request(const char *p, size_t len, struct http_request *out, int *status)
{
	struct http_request	 r;
	size_t			 off = 0, linelen, textlen, fields = 0;
	bool			 conn_upgrade = false, te = false;
	bool			 have_cl = false;
	unsigned long long	 cl = 0;
	enum parse_result	 res;

	memset(&r, 0, sizeof(r));
	off = skip_empty_lines(p, len);
	res = line_next(p + off, len - off, HTTP_REQUEST_LINE_MAX, &linelen, &textlen);
	if (res == PARSE_NEED_MORE)
		return PARSE_NEED_MORE;
	if (res == PARSE_TOO_LONG)
		return fail(status, 414);
	if ((res = parse_request_line(p + off, textlen, &r, status)) != PARSE_OK)
		return res;
	off += linelen;

	for (;;) {
		if (off >= HTTP_HEAD_MAX)
			return fail(status, 431);
		res = line_next(p + off, len - off, HTTP_HEAD_MAX - off, &linelen, &textlen);
		if (res == PARSE_NEED_MORE)
			return PARSE_NEED_MORE;
		if (res == PARSE_TOO_LONG)
			return fail(status, 431);
		if (textlen == 0) {
			off += linelen;
			break;
		}
		if (++fields > HTTP_FIELDS_MAX)
			return fail(status, 431);

		const char	*line = p + off, *v;
		size_t		 nlen, voff, vl;

		if (!field_split(line, textlen, &nlen, &voff, &vl))
			return fail(status, 400);
		v = line + voff;
		if (name_is(line, nlen, "Upgrade")) {
			if (r.tls_token[0] == '\0')
				upgrade_find_tls(v, vl, r.tls_token);
		} else if (name_is(line, nlen, "Connection"))
			conn_upgrade = conn_upgrade || list_has(v, vl, "upgrade", 7);
		else if (name_is(line, nlen, "Transfer-Encoding"))
			te = true;
		else if (name_is(line, nlen, "Content-Length")) {
			unsigned long long n = 0;

			if (vl == 0 || vl > 18)
				return fail(status, 400);
			for (size_t i = 0; i < vl; i++) {
				if (!isdigit((unsigned char)v[i]))
					return fail(status, 400);
				n = n * 10 + (unsigned long long)(v[i] - '0');
			}
			/* two different lengths are a smuggling attempt (RFC 9112 section 6.3) */
			if (have_cl && n != cl)
				return fail(status, 400);
			have_cl = true;
			cl = n;
		}
		off += linelen;
	}
	if (te && have_cl)
		return fail(status, 400);
	r.head_len = off;
	r.upgrade_tls = r.tls_token[0] != '\0' && conn_upgrade;
	r.has_body = te || cl > 0;
	*out = r;
	return PARSE_OK;
}

enum parse_result
http_strip_hop_by_hop(const char *head, size_t len, char *out, size_t outsz,
    size_t *outlen)
{
	struct {
		size_t	 off, len;
	}		 conn[HTTP_FIELDS_MAX];		/* the Connection values */
	struct {
		size_t	 off, linelen, nlen;
		bool	 keep;
	}		 field[HTTP_FIELDS_MAX];
	size_t		 nconn = 0, nfields = 0, off, linelen, textlen;
	size_t		 req_off, req_len, end_len, total;

	/* the request line, then the field lines, then the empty line at len */
	off = req_off = skip_empty_lines(head, len);
	if (line_next(head + off, len - off, HTTP_REQUEST_LINE_MAX, &linelen,
	    &textlen) != PARSE_OK || textlen == 0)
		return PARSE_MALFORMED;
	req_len = linelen;
	off += linelen;
	for (;;) {
		const char	*line = head + off, *e;
		size_t		 nlen, voff, vlen, el, pos = 0;

		if (line_next(line, len - off, len - off, &linelen, &textlen) != PARSE_OK)
			return PARSE_MALFORMED;
		if (textlen == 0)
			break;
		if (nfields == HTTP_FIELDS_MAX)
			return PARSE_TOO_LONG;
		if (!field_split(line, textlen, &nlen, &voff, &vlen))
			return PARSE_MALFORMED;
		field[nfields].off = off;
		field[nfields].linelen = linelen;
		field[nfields].nlen = nlen;
		nfields++;
		if (name_is(line, nlen, "Connection")) {
			/* it names fields: a list we cannot read names we cannot remove */
			while (list_next(line + voff, vlen, &pos, &e, &el))
				if (!is_token(e, el))
					return PARSE_MALFORMED;
			conn[nconn].off = off + voff;
			conn[nconn].len = vlen;
			nconn++;
		}
		off += linelen;
	}
	end_len = linelen;
	if (off + end_len != len)
		return PARSE_MALFORMED;

	total = req_len + end_len;
	for (size_t i = 0; i < nfields; i++) {
		const char	*name = head + field[i].off;
		size_t		 nlen = field[i].nlen;
		bool		 keep;

		keep = !name_is(name, nlen, "Connection") && !name_is(name, nlen, "Upgrade");
		for (size_t j = 0; keep && j < nconn; j++)
			if (list_has(head + conn[j].off, conn[j].len, name, nlen))
				keep = false;
		field[i].keep = keep;
		if (keep)
			total += field[i].linelen;
	}
	if (total > outsz)
		return PARSE_TOO_LONG;

	memcpy(out, head + req_off, req_len);
	total = req_len;
	for (size_t i = 0; i < nfields; i++) {
		if (!field[i].keep)
			continue;
		memcpy(out + total, head + field[i].off, field[i].linelen);
		total += field[i].linelen;
	}
	memcpy(out + total, head + off, end_len);
	*outlen = total + end_len;
	return PARSE_OK;
}

bool
http_is_connect(const struct http_request *r)
{
	return r->method_len == 7 && memcmp(r->method, "CONNECT", 7) == 0;
}

int
http_authority_parse(const char *target, size_t len, struct addr *out)
{
	char		 buf[ADDR_HOST_MAX + 16];
	const char	*why;

	if (len >= sizeof(buf) || memchr(target, '\0', len) != NULL)
		return -1;
	memcpy(buf, target, len);
	buf[len] = '\0';
	return addr_parse(buf, ADDR_ALLOW_NAME, out, &why);
}

bool
http_connect_rule_match(const char *rule, const struct addr *target)
{
	struct addr	 r;
	const char	*why;
	bool		 wild = strncmp(rule, "*.", 2) == 0;

	if (addr_parse(wild ? rule + 2 : rule, ADDR_ALLOW_NAME, &r, &why) == -1)
		return false;
	if (r.port != target->port)
		return false;
	if (!wild)
		return strcasecmp(r.host, target->host) == 0;
	/* "*.example.com": a name that ends in ".example.com", longer than it */
	size_t	 tl = strlen(target->host), sl = strlen(r.host);

	return target->kind == ADDR_NAME && tl > sl + 1 &&
	    target->host[tl - sl - 1] == '.' &&
	    strcasecmp(target->host + tl - sl, r.host) == 0;
}

bool
http_connect_allowed(char *const *rules, size_t n, const struct addr *target)
{
	for (size_t i = 0; i < n; i++)
		if (http_connect_rule_match(rules[i], target))
			return true;
	return false;
}

const char *
http_reason(int status)
{
	switch (status) {
	case 101:	return "Switching Protocols";
	case 200:	return "Connection established";
	case 400:	return "Bad Request";
	case 403:	return "Forbidden";
	case 414:	return "URI Too Long";
	case 426:	return "Upgrade Required";
	case 431:	return "Request Header Fields Too Large";
	case 502:	return "Bad Gateway";
	case 503:	return "Service Unavailable";
	case 504:	return "Gateway Timeout";
	case 505:	return "HTTP Version Not Supported";
	}
	return "Error";
}
