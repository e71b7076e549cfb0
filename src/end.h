/*
 * How a session ended: the end= of its log line.  The names are the
 * interface (starttls-proxy(8), LOGGING; a unit test checks the table
 * against the man page); stats count by the enum.
 */
#ifndef STP_END_H
#define STP_END_H

enum session_end {
	END_CLIENT_CLOSED,
	END_BACKEND_CLOSED,
	END_CLIENT_ERROR,
	END_BACKEND_ERROR,
	END_HANDSHAKE_FAILED,
	END_TIMEOUT_CLEARTEXT,
	END_TIMEOUT_HANDSHAKE,
	END_TIMEOUT_IDLE,
	END_BACKEND_UNREACHABLE,
	END_BACKEND_TIMEOUT,
	END_BACKEND_VERIFY_FAILED,
	END_BACKEND_TLS_FAILED,
	END_PROTOCOL_ERROR,
	END_PROXY_HEADER_INVALID,
	END_SHUTDOWN,
	END_BUSY,
	END_NO_ROUTE,
	END_DENIED,
	END_CLIENT_LIMIT,
	END_INTERNAL,
	END_MAX
};

/* "client-closed", ...; never NULL. */
const char	*end_name(enum session_end);

#endif
