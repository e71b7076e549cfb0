#include "autoconfig.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "util.h"

static int
port_parse(const char *s, uint16_t *port)
{
	unsigned long	 v = 0;

	if (*s == '\0')
		return -1;
	for (; *s != '\0'; s++) {
		if (!isdigit((unsigned char)*s))
			return -1;
		v = v * 10 + (unsigned long)(*s - '0');
		if (v > 65535)
			return -1;
	}
	if (v == 0)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

bool
ip_literal(const char *s)
{
	struct in6_addr	 a6;
	struct in_addr	 a4;

	return inet_pton(AF_INET, s, &a4) == 1 || inet_pton(AF_INET6, s, &a6) == 1;
}

bool
hostname_valid(const char *s)
{
	size_t	 len = strlen(s), label = 0;

	if (len == 0 || len > ADDR_HOST_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!isalnum(c) && c != '-' && c != '_')
			return false;
		if (++label > 63)
			return false;
	}
	return true;
}

bool
server_name_match(const char *pattern, const char *name)
{
	size_t	 nl, sl;

	if (strncmp(pattern, "*.", 2) != 0)
		return strcasecmp(pattern, name) == 0;
	pattern += 2;
	nl = strlen(name);
	sl = strlen(pattern);
	return nl > sl + 1 && name[nl - sl - 1] == '.' && name[0] != '.' &&
	    strcasecmp(name + nl - sl, pattern) == 0;
}

int
addr_parse(const char *text, int flags, struct addr *out, const char **why)
{
	struct addr	 a;
	const char	*colon, *hostp;
	size_t		 hostlen;

	memset(&a, 0, sizeof(a));

	if (strncmp(text, "unix:", 5) == 0) {
		struct sockaddr_un	*sun = (struct sockaddr_un *)&a.ss;
		const char		*path = text + 5;

		if (!(flags & ADDR_ALLOW_UNIX)) {
			*why = "a unix socket is not allowed here";
			return -1;
		}
		if (path[0] != '/') {
			*why = "a unix socket path must be absolute (unix:/path)";
			return -1;
		}
		if (strlen(path) >= sizeof(sun->sun_path)) {
			*why = "unix socket path too long";
			return -1;
		}
		a.kind = ADDR_UNIX;
		sun->sun_family = AF_UNIX;
		strcpy(sun->sun_path, path);
		a.sslen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
		snprintf(a.host, sizeof(a.host), "%s", path);
		*out = a;
		return 0;
	}

	if (text[0] == '[') {
		const char *close = strchr(text, ']');

		if (close == NULL || close[1] != ':') {
			*why = "expected [IPv6]:port";
			return -1;
		}
		hostp = text + 1;
		hostlen = (size_t)(close - hostp);
		colon = close + 1;
	} else {
		colon = strrchr(text, ':');
		if (colon == NULL) {
			*why = "missing :port";
			return -1;
		}
		if (memchr(text, ':', (size_t)(colon - text)) != NULL) {
			*why = "an IPv6 address must be written in brackets, [v6]:port";
			return -1;
		}
		hostp = text;
		hostlen = (size_t)(colon - text);
	}
	if (hostlen == 0 || hostlen > ADDR_HOST_MAX) {
		*why = hostlen == 0 ? "missing host" : "host name too long";
		return -1;
	}
	memcpy(a.host, hostp, hostlen);
	a.host[hostlen] = '\0';
	if (port_parse(colon + 1, &a.port) == -1) {
		*why = "port must be a number from 1 to 65535";
		return -1;
	}

	struct sockaddr_in	*sin = (struct sockaddr_in *)&a.ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&a.ss;

	if (text[0] != '[' && inet_pton(AF_INET, a.host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(a.port);
		a.sslen = sizeof(*sin);
		a.kind = ADDR_INET;
	} else if (text[0] == '[') {
		if (inet_pton(AF_INET6, a.host, &sin6->sin6_addr) != 1) {
			*why = "not a valid IPv6 address inside [ ]";
			return -1;
		}
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(a.port);
		a.sslen = sizeof(*sin6);
		a.kind = ADDR_INET;
	} else {
		if (!(flags & ADDR_ALLOW_NAME)) {
			*why = "not a numeric address";
			return -1;
		}
		if (!hostname_valid(a.host)) {
			*why = "not a valid host name";
			return -1;
		}
		a.kind = ADDR_NAME;
	}
	*out = a;
	return 0;
}

void
addr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen)
{
	char	 host[INET6_ADDRSTRLEN];

	switch (sa->sa_family) {
	case AF_INET: {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(buf, buflen, "%s:%u", host, ntohs(sin->sin_port));
		break;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(buf, buflen, "[%s]:%u", host, ntohs(sin6->sin6_port));
		break;
	}
	case AF_UNIX: {
		const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;

		if (len <= offsetof(struct sockaddr_un, sun_path) || sun->sun_path[0] == '\0')
			snprintf(buf, buflen, "unix:");
		else
			snprintf(buf, buflen, "unix:%.*s",
			    (int)(len - offsetof(struct sockaddr_un, sun_path)), sun->sun_path);
		break;
	}
	default:
		snprintf(buf, buflen, "unknown");
	}
}

bool
addr_sockaddr_equal(const struct sockaddr *a, socklen_t alen,
    const struct sockaddr *b, socklen_t blen)
{
	if (a->sa_family != b->sa_family)
		return false;
	switch (a->sa_family) {
	case AF_INET: {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;

		return x->sin_port == y->sin_port &&
		    x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;

		return x->sin6_port == y->sin6_port &&
		    memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0 &&
		    x->sin6_scope_id == y->sin6_scope_id;
	}
	case AF_UNIX:
		return alen == blen && memcmp(a, b, alen) == 0;
	}
	return false;
}

unsigned
edit_distance(const char *a, const char *b)
{
	enum { MAXLEN = 64 };
	unsigned	 row[MAXLEN + 1];
	size_t		 la = strlen(a), lb = strlen(b);

	if (la > MAXLEN || lb > MAXLEN)
		return UINT_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = (unsigned)j;
	for (size_t i = 1; i <= la; i++) {
		unsigned diag = row[0];

		row[0] = (unsigned)i;
		for (size_t j = 1; j <= lb; j++) {
			unsigned up = row[j];
			unsigned cost = a[i - 1] == b[j - 1] ? 0 : 1;
			unsigned best = diag + cost;

			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

int
pin_decode(const char *b64, unsigned char out[32])
{
	unsigned char	 buf[48];
	size_t		 len = strlen(b64);
	int		 n;

	/* base64 of 32 bytes is 44 characters with one '=' of padding */
	if (len != 44 || b64[43] != '=' || b64[42] == '=')
		return -1;
	n = EVP_DecodeBlock(buf, (const unsigned char *)b64, (int)len);
	if (n != 33)	/* EVP_DecodeBlock counts the padding as a zero byte */
		return -1;
	memcpy(out, buf, 32);
	return 0;
}

bool
pin_match(const unsigned char digest[32], const char *const *pins, size_t npins)
{
	unsigned char	 want[32];

	for (size_t i = 0; i < npins; i++) {
		if (pin_decode(pins[i], want) == 0 &&
		    CRYPTO_memcmp(want, digest, 32) == 0)
			return true;
	}
	return false;
}

size_t
tls_record_start(const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (p[i] != 0x16)
			continue;
		if (i + 1 < len && p[i + 1] != 0x03)
			continue;
		if (i + 2 < len && p[i + 2] > 0x04)
			continue;
		return i;
	}
	return len;
}
