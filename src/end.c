/*
 * The names of session ends: see end.h.
 */
#include "autoconfig.h"

#include <stddef.h>

#include "end.h"

static const char *const end_names[END_MAX] = {
	[END_CLIENT_CLOSED] = "client-closed",
	[END_BACKEND_CLOSED] = "backend-closed",
	[END_CLIENT_ERROR] = "client-error",
	[END_BACKEND_ERROR] = "backend-error",
	[END_HANDSHAKE_FAILED] = "handshake-failed",
	[END_TIMEOUT_CLEARTEXT] = "timeout-cleartext",
	[END_TIMEOUT_HANDSHAKE] = "timeout-handshake",
	[END_TIMEOUT_IDLE] = "timeout-idle",
	[END_BACKEND_UNREACHABLE] = "backend-unreachable",
	[END_BACKEND_TIMEOUT] = "backend-timeout",
	[END_BACKEND_VERIFY_FAILED] = "backend-verify-failed",
	[END_BACKEND_TLS_FAILED] = "backend-tls-failed",
	[END_PROTOCOL_ERROR] = "protocol-error",
	[END_PROXY_HEADER_INVALID] = "proxy-header-invalid",
	[END_SHUTDOWN] = "shutdown",
	[END_BUSY] = "busy",
	[END_NO_ROUTE] = "no-route",
	[END_DENIED] = "denied",
	[END_CLIENT_LIMIT] = "client-limit",
	[END_INTERNAL] = "internal",
};

const char *
end_name(enum session_end e)
{
	return (unsigned)e < END_MAX && end_names[e] != NULL ? end_names[e] : "internal";
}
