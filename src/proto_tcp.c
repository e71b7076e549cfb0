/*
 * tcp: no protocol.  TLS from the first byte (client_tls = "implicit") or
 * a plain relay (client_tls = "none"); the session relays transparently.
 */
#include "autoconfig.h"

#include "proto.h"

const struct proto proto_tcp = {
	.name = "tcp",
	.default_client_tls = CLIENT_TLS_IMPLICIT,
	.default_require_tls = false,
	.has_upgrade = false,
	.connect_early = false,
};
