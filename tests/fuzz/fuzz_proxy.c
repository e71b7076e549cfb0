/*
 * libFuzzer target: the PROXY protocol reader (src/proxy_proto.c) on the
 * first bytes of a connection, and for every header it takes, the v1 and
 * v2 headers the proxy would write for the same addresses and TLS
 * information, read back: they must say the same (a trap otherwise).
 */
#include <sys/socket.h>
#include <netinet/in.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proxy_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
same_addresses(const struct proxy_header *a, const struct proxy_header *b)
{
	return a->srclen == b->srclen && a->dstlen == b->dstlen &&
	    memcmp(&a->src, &b->src, sizeof(a->src)) == 0 &&
	    memcmp(&a->dst, &b->dst, sizeof(a->dst)) == 0;
}

/* What a header itself must hold to, whatever the input was. */
static void
check_header(const uint8_t *data, size_t size, const struct proxy_header *h)
{
	struct proxy_header	 again;
	int			 af = h->src.ss_family;

	if (h->len == 0 || h->len > size)
		__builtin_trap();
	if (h->version == 1) {
		if (h->len > PROXY_V1_MAX || data[h->len - 2] != '\r' ||
		    data[h->len - 1] != '\n' || h->command != PROXY_V2_PROXY)
			__builtin_trap();
	} else if (h->version == 2) {
		if (h->len < PROXY_V2_HEADER || h->len > PROXY_V2_MAX ||
		    h->len != PROXY_V2_HEADER + (size_t)(data[14] << 8 | data[15]))
			__builtin_trap();
	} else
		__builtin_trap();
	/* addresses exactly when not local, both of one family */
	if (h->local != (af == AF_UNSPEC) || h->dst.ss_family != af)
		__builtin_trap();
	if (h->local && (h->srclen != 0 || h->dstlen != 0))
		__builtin_trap();
	if (!h->local && af != AF_INET && af != AF_INET6 && af != AF_UNIX)
		__builtin_trap();
	if (af == AF_UNIX && h->version != 2)
		__builtin_trap();

	/* the header alone says the same; a prefix of it is never a header */
	if (proxy_parse(data, h->len, &again) != PARSE_OK ||
	    memcmp(&again, h, sizeof(again)) != 0)
		__builtin_trap();
	if (proxy_parse(data, h->len - 1, &again) != PARSE_NEED_MORE ||
	    proxy_parse(data, h->len / 2, &again) != PARSE_NEED_MORE)
		__builtin_trap();
}

/* v1 for the same addresses: TCP4 or TCP6 for IP ones, else UNKNOWN. */
static void
check_v1(const struct proxy_header *h)
{
	struct proxy_header	 back;
	uint8_t			 out[PROXY_V1_MAX], out2[PROXY_V1_MAX];
	bool			 ip = !h->local && h->src.ss_family != AF_UNIX;
	ssize_t			 n, n2;

	n = proxy_build_v1((const struct sockaddr *)&h->src, (const struct sockaddr *)&h->dst,
	    out, sizeof(out));
	if (n <= 0 || proxy_parse(out, (size_t)n, &back) != PARSE_OK ||
	    back.len != (size_t)n || back.version != 1 || back.local == ip)
		__builtin_trap();
	if (ip && !same_addresses(h, &back))
		__builtin_trap();
	/* and written again from what was read: the same bytes */
	n2 = proxy_build_v1((const struct sockaddr *)&back.src,
	    (const struct sockaddr *)&back.dst, out2, sizeof(out2));
	if (n2 != n || memcmp(out, out2, (size_t)n) != 0)
		__builtin_trap();
}

/* v2 for the same addresses and the TLS information it carried. */
static void
check_v2(const struct proxy_header *h)
{
	struct proxy_header	 back;
	struct proxy_tls_info	 tls, tls2;
	uint8_t			 out[PROXY_V2_MAX], out2[PROXY_V2_MAX];
	bool			 ip = !h->local && h->src.ss_family != AF_UNIX;
	ssize_t			 n, n2;

	tls = (struct proxy_tls_info){
		.tls = h->tlv.ssl && (h->tlv.ssl_client & PP2_CLIENT_SSL) != 0,
		.version = h->tlv.ssl_version,
		.cipher = h->tlv.ssl_cipher,
		.sni = h->tlv.authority,
		.upgrade = h->tlv.upgrade,
	};
	n = proxy_build_v2((const struct sockaddr *)&h->src, (const struct sockaddr *)&h->dst,
	    &tls, out, sizeof(out));
	if (n <= 0 || proxy_parse(out, (size_t)n, &back) != PARSE_OK ||
	    back.len != (size_t)n || back.version != 2 || back.local == ip ||
	    back.command != (ip ? PROXY_V2_PROXY : PROXY_V2_LOCAL))
		__builtin_trap();
	if (ip && !same_addresses(h, &back))
		__builtin_trap();
	if (back.tlv.ssl != tls.tls ||
	    back.tlv.ssl_client != (tls.tls ? PP2_CLIENT_SSL : 0) ||
	    back.tlv.ssl_verify != 0 ||
	    strcmp(back.tlv.authority, h->tlv.authority) != 0 ||
	    strcmp(back.tlv.upgrade, h->tlv.upgrade) != 0 ||
	    back.tlv.ssl_cn[0] != '\0' || back.tlv.unique_id_len != 0 ||
	    back.tlv.alpn_len != 0 || back.tlv.crc32c)
		__builtin_trap();
	if (tls.tls && (strcmp(back.tlv.ssl_version, h->tlv.ssl_version) != 0 ||
	    strcmp(back.tlv.ssl_cipher, h->tlv.ssl_cipher) != 0))
		__builtin_trap();
	if (!tls.tls && (back.tlv.ssl_version[0] != '\0' || back.tlv.ssl_cipher[0] != '\0'))
		__builtin_trap();

	tls2 = (struct proxy_tls_info){
		.tls = back.tlv.ssl,
		.version = back.tlv.ssl_version,
		.cipher = back.tlv.ssl_cipher,
		.sni = back.tlv.authority,
		.upgrade = back.tlv.upgrade,
	};
	n2 = proxy_build_v2(back.local ? NULL : (const struct sockaddr *)&back.src,
	    back.local ? NULL : (const struct sockaddr *)&back.dst, &tls2, out2, sizeof(out2));
	if (n2 != n || memcmp(out, out2, (size_t)n) != 0)
		__builtin_trap();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_header	 h, sentinel;
	enum parse_result	 r;

	memset(&sentinel, 0xa5, sizeof(sentinel));
	h = sentinel;
	r = proxy_parse(data, size, &h);
	if (r != PARSE_OK) {
		/* *out is written only with PARSE_OK */
		if (memcmp(&h, &sentinel, sizeof(h)) != 0)
			__builtin_trap();
		/* a header followed by a byte is still a header */
		if (size > 1 && proxy_parse(data, size - 1, &h) == PARSE_OK)
			__builtin_trap();
		return 0;
	}
	check_header(data, size, &h);
	check_v1(&h);
	check_v2(&h);
	return 0;
}
