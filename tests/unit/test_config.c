/*
 * Unit tests for src/config.c: defaults, and the exact text of each
 * validation error ("name:line: path: problem (expected ...)").
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <openssl/ssl.h>

#include <event2/buffer.h>

#include "config.h"
#include "harness.h"
#include "proto.h"
#include "runtime.h"

#define MINIMAL \
	"listeners = ( { name = \"a\"; listen = \"127.0.0.1:8443\"; protocol = \"tcp\";\n" \
	"  backend = { address = \"127.0.0.1:8080\"; }; } );\n"

static struct config_errors errs;

static void
teardown_errs(void)
{
	config_errors_clear(&errs);
}

/*
 * Load text for use, as the daemon does (the file, then every TLS context
 * it needs): a configuration, or NULL with errs filled.
 */
static struct config *
load(const char *text)
{
	struct config	*cfg = config_load_string(text, "t.conf", &errs);
	struct runtime	*rt = cfg ? runtime_new(cfg, &errs) : NULL;

	config_unref(cfg);
	if (rt == NULL)
		return NULL;
	cfg = config_ref(rt->cfg);
	runtime_unref(rt);
	return cfg;
}

/* Load text; expect failure and exactly this first error line. */
static void
expect_error(const char *text, const char *want)
{
	struct config	*cfg = load(text);

	assert_null(cfg);
	assert_true(errs.count >= 1);
	for (size_t i = 0; i < errs.count; i++)
		if (strcmp(errs.lines[i], want) == 0) {
			teardown_errs();
			return;
		}
	for (size_t i = 0; i < errs.count; i++)
		fprintf(stderr, "got: %s\n", errs.lines[i]);
	fprintf(stderr, "want: %s\n", want);
	fail();
}

/* Load text; expect it to load without a problem. */
static void
expect_ok(const char *text)
{
	struct config	*cfg = load(text);

	for (size_t i = 0; i < errs.count; i++)
		fprintf(stderr, "got: %s\n", errs.lines[i]);
	assert_non_null(cfg);
	config_unref(cfg);
	teardown_errs();
}

/*
 * A protocol's own settings are its module's: they are checked through
 * what the module does with them.  One client input to a fresh module
 * state under lc: the verdict, and what the proxy answered (NULL when it
 * relayed the input instead).
 */
static void
module_answers(const struct listener_conf *lc, const char *input, enum proto_verdict want,
    const char *answer)
{
	struct harness	 h;
	size_t		 n;

	harness_open_listener(&h, lc);
	evbuffer_add(h.from_client, input, strlen(input));
	assert_int_equal(harness_call(&h, HARNESS_CLIENT), want);
	n = evbuffer_get_length(h.to_client);
	if (answer == NULL) {
		assert_int_equal(n, 0);
		assert_int_equal(evbuffer_get_length(h.to_backend), strlen(input));
	} else {
		assert_int_equal(n, strlen(answer));
		assert_memory_equal(evbuffer_pullup(h.to_client, -1), answer, n);
	}
	harness_close(&h);
}

static void
assert_line_answers(const struct listener_conf *lc, const char *line, enum proto_verdict want,
    const char *answer)
{
	module_answers(lc, line, want, answer);
}

/* Whether http.connect_allow lets a CONNECT to target through. */
static void
assert_connect(const struct listener_conf *lc, const char *target, bool allowed)
{
	char	 req[256], refusal[256];

	snprintf(req, sizeof(req), "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target);
	snprintf(refusal, sizeof(refusal), "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
	    "Content-Length: 28\r\nConnection: close\r\n\r\nThis target is not allowed.\n");
	if (allowed) {
		struct harness h;

		harness_open_listener(&h, lc);
		evbuffer_add(h.from_client, req, strlen(req));
		assert_int_equal(harness_call(&h, HARNESS_CLIENT), PROTO_CONNECT);
		harness_close(&h);
	} else
		module_answers(lc, req, PROTO_CLOSE, refusal);
}

static void
test_defaults(void **state)
{
	struct config		*cfg = config_load_string(MINIMAL, "t.conf", &errs);
	struct listener_conf	*lc;

	assert_non_null(cfg);
	assert_int_equal(errs.count, 0);
	assert_int_equal(cfg->workers, 1);
	assert_int_equal(cfg->max_connections, 10000);
	assert_int_equal(cfg->shutdown_timeout, 30);
	assert_int_equal(cfg->log_level, LOG_LEVEL_INFO);
	assert_false(cfg->log_target_set);
	assert_int_equal(cfg->nlisteners, 1);
	lc = &cfg->listeners[0];
	assert_string_equal(lc->name, "a");
	assert_ptr_equal(lc->proto, &proto_tcp);
	assert_int_equal(lc->client_tls, CLIENT_TLS_IMPLICIT);
	assert_false(lc->require_tls);
	assert_int_equal(lc->max_connections, 10000);
	assert_int_equal(lc->high_watermark, 262144);
	assert_int_equal(lc->low_watermark, 65536);
	assert_int_equal(lc->timeouts.connect, 10);
	assert_int_equal(lc->timeouts.handshake, 15);
	assert_int_equal(lc->timeouts.cleartext, 60);
	assert_int_equal(lc->timeouts.idle, 300);
	assert_int_equal(lc->tls.min_version, TLS1_2_VERSION);
	assert_int_equal(lc->tls.ncerts, 0);
	assert_int_equal(lc->backend.tls, BACKEND_TLS_NONE);
	assert_false(lc->backend.verify);
	assert_int_equal(lc->backend.address.port, 8080);
	config_unref(cfg);
}

static void
test_full_listener(void **state)
{
	const char *text =
	    "max_connections = 50; log_level = \"debug\"; log_target = \"stderr\";\n"
	    "listeners = ( { name = \"full\"; listen = [ \"127.0.0.1:1\", \"[::1]:1\" ];\n"
	    "  protocol = \"tcp\"; client_tls = \"none\"; max_connections = 7;\n"
	    "  high_watermark = 8192; low_watermark = 1024;\n"
	    "  timeouts = { connect = 1; handshake = 2; cleartext = 3; idle = 4; };\n"
	    "  backend = { address = \"mx.example:25\"; tls = \"implicit\"; server_name = \"mx.example\";\n"
	    "    pin_sha256 = \"ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=\"; }; } );\n";
	struct config		*cfg = config_load_string(text, "t.conf", &errs);
	struct listener_conf	*lc;

	assert_non_null(cfg);
	lc = &cfg->listeners[0];
	assert_int_equal(cfg->max_connections, 50);
	assert_int_equal(cfg->log_level, LOG_LEVEL_DEBUG);
	assert_int_equal(cfg->log_target, LOG_TARGET_STDERR);
	assert_int_equal(lc->nlisten, 2);
	assert_int_equal(lc->client_tls, CLIENT_TLS_NONE);
	assert_int_equal(lc->max_connections, 7);
	assert_int_equal(lc->high_watermark, 8192);
	assert_int_equal(lc->timeouts.idle, 4);
	assert_int_equal(lc->backend.address.kind, ADDR_NAME);
	assert_true(lc->backend.verify);	/* on by default with TLS */
	assert_int_equal(lc->backend.npins, 1);
	config_unref(cfg);
}

static void
test_syntax_error(void **state)
{
	expect_error("listeners = ( { name = = \"a\"; } );\n", "t.conf:1: syntax error");
}

static void
test_unknown_settings(void **state)
{
	expect_error("listners = ();\n" MINIMAL,
	    "t.conf:1: listners: unknown setting (did you mean \"listeners\"?)");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  colour = \"blue\"; backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:2: listeners.[0].colour: unknown setting (expected one of name, listen, "
	    "protocol, client_tls, require_tls, accept_proxy_protocol, access, client_limits, max_connections, "
	    "high_watermark, low_watermark, timeouts, tls, backend, routes, http, line)");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  timeouts = { idel = 3; };\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:2: listeners.[0].timeouts.idel: unknown setting (did you mean \"idle\"?)");
}

static void
test_protocol_errors(void **state)
{
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\";\n"
	    "  protocol = \"tcpp\"; backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:2: listeners.[0].protocol: unknown protocol \"tcpp\" (expected one of smtp, imap, pop3, ldap, postgres, http, line, tcp)");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\";\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:1: listeners.[0]: protocol is required (expected one of smtp, imap, pop3, ldap, postgres, http, line, tcp)");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  client_tls = \"starttls\"; backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:2: listeners.[0].client_tls: protocol tcp has no upgrade verb (expected implicit or none)");
}

static void
test_listener_errors(void **state)
{
	expect_error("listeners = ();\n", "t.conf:1: listeners: must hold at least one listener");
	expect_error("user = \"x\";\n", "t.conf: listeners: is required (a list of listener groups)");
	expect_error(
	    "listeners = ( { listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:1: listeners.[0]: name is required (a unique name used in logs)");
	expect_error(
	    "listeners = ( { name = \"a b\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:1: listeners.[0].name: \"a b\" is not a valid name (expected 1 to 64 letters, digits, '-', '_' or '.')");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"localhost:1\"; protocol = \"tcp\";\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:1: listeners.[0].listen: \"localhost:1\": not a numeric address (expected 0.0.0.0:port, 127.0.0.1:port or [::]:port)");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = 25; protocol = \"tcp\";\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:1: listeners.[0].listen: expected a string or a list of strings, found an integer");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\"; } );\n",
	    "t.conf:1: listeners.[0]: backend is required (backend = { address = \"host:port\"; };)");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; },\n"
	    "  { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:3: listeners.[1].name: \"a\" is already the name of t.conf:1: listeners.[0]");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; },\n"
	    "  { name = \"b\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:3: listeners.[1].listen: 127.0.0.1:1 is already listened on by t.conf:1: listeners.[0]");
}

static void
test_number_errors(void **state)
{
	expect_error("max_connections = 0;\n" MINIMAL,
	    "t.conf:1: max_connections: 0 is out of range (expected 1 to 1000000)");
	expect_error("shutdown_timeout = \"30\";\n" MINIMAL,
	    "t.conf:1: shutdown_timeout: expected an integer from 0 to 3600, found a string");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  high_watermark = 4096; low_watermark = 4096;\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:2: listeners.[0].low_watermark: 4096 must be below high_watermark (4096)");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  timeouts = { idle = 0; };\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:2: listeners.[0].timeouts.idle: 0 is out of range (expected 1 to 86400)");
	expect_error("log_level = \"loud\";\n" MINIMAL,
	    "t.conf:1: log_level: unknown level \"loud\" (expected one of error, warning, info, debug)");
	expect_error("log_target = \"file\";\n" MINIMAL,
	    "t.conf:1: log_target: unknown value \"file\" (expected one of syslog, stderr)");
	expect_error("group = \"daemon\";\n" MINIMAL,
	    "t.conf:1: group: needs user: the group is set when dropping privileges to user");
}

static void
test_tls_errors(void **state)
{
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  tls = { min_version = \"TLSv1.1\"; };\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:2: listeners.[0].tls.min_version: unknown value \"TLSv1.1\" (expected one of TLSv1.2, TLSv1.3)");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  tls = { verify_client = \"require\"; };\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:2: listeners.[0].tls.verify_client: needs client_ca, the CA certificates that client certificates are checked against");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  tls = { ciphers = \"NOTHING-AT-ALL\"; };\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:2: listeners.[0].tls.ciphers: no usable cipher in \"NOTHING-AT-ALL\" (expected an OpenSSL cipher list, see ciphers(1))");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  tls = { certificates = ( { key = \"k.pem\"; } ); };\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:2: listeners.[0].tls.certificates.[0]: cert is required (a PEM file with the certificate chain)");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\"; client_tls = \"none\";\n"
	    "  tls = { };\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:2: listeners.[0].tls: client_tls is \"none\": this listener never speaks TLS to clients");
}

static void
test_backend_errors(void **state)
{
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  backend = { address = \"127.0.0.1\"; }; } );\n",
	    "t.conf:2: listeners.[0].backend.address: \"127.0.0.1\": missing :port (expected host:port, [v6]:port or unix:/path)");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  backend = { }; } );\n",
	    "t.conf:2: listeners.[0].backend: address is required (host:port, [v6]:port or unix:/path)");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  backend = { address = \"127.0.0.1:2\"; tls = \"implicit\";\n"
	    "    pin_sha256 = [ \"abc\" ]; }; } );\n",
	    "t.conf:3: listeners.[0].backend.pin_sha256.[0]: \"abc\" is not a pin (expected the base64 of a SHA-256 digest, 44 characters)");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  backend = { address = \"127.0.0.1:2\";\n"
	    "    ca = \"/etc/ssl/certs/ca-certificates.crt\"; }; } );\n",
	    "t.conf:3: listeners.[0].backend.ca: only applies with tls = \"implicit\" or \"starttls\" (the backend is reached in plaintext)");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  backend = { address = \"unix:/run/x\"; tls = \"implicit\"; }; } );\n",
	    "t.conf:2: listeners.[0].backend.server_name: a TLS backend on a unix socket needs server_name (or pin_sha256, or verify = false) to check its certificate against");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  backend = { address = \"127.0.0.1:2\"; tls = \"tls\"; }; } );\n",
	    "t.conf:2: listeners.[0].backend.tls: unknown value \"tls\" (expected one of none, implicit, starttls)");
}

static void
test_protocol_defaults(void **state)
{
	const char *text =
	    "listeners = ( { name = \"mail\"; listen = \"127.0.0.1:1\"; protocol = \"smtp\";\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; },\n"
	    "  { name = \"demo\"; listen = \"127.0.0.1:3\"; protocol = \"line\";\n"
	    "  backend = { address = \"127.0.0.1:4\"; }; },\n"
	    "  { name = \"custom\"; listen = \"127.0.0.1:5\"; protocol = \"line\"; require_tls = true;\n"
	    "  line = { command = \"UPGRADE\"; reply = \"OK go\"; refusal = \"NO\"; };\n"
	    "  backend = { address = \"127.0.0.1:6\"; }; } );\n";
	struct config	*cfg = config_load_string(text, "t.conf", &errs);

	assert_non_null(cfg);
	assert_ptr_equal(cfg->listeners[0].proto, &proto_smtp);
	assert_int_equal(cfg->listeners[0].client_tls, CLIENT_TLS_STARTTLS);
	assert_true(cfg->listeners[0].require_tls);
	assert_ptr_equal(cfg->listeners[1].proto, &proto_line);
	assert_int_equal(cfg->listeners[1].client_tls, CLIENT_TLS_STARTTLS);
	assert_false(cfg->listeners[1].require_tls);
	/* the line block's defaults: command STARTTLS, no reply, the refusal */
	assert_line_answers(&cfg->listeners[1], "STARTTLS\r\n", PROTO_UPGRADE, "");
	assert_line_answers(&cfg->listeners[1], "UPGRADE\r\n", PROTO_CONTINUE, NULL);
	{
		struct listener_conf strict = cfg->listeners[1];

		strict.require_tls = true;
		assert_line_answers(&strict, "PING\r\n", PROTO_CONTINUE, "ERR STARTTLS required\r\n");
	}
	assert_true(cfg->listeners[2].require_tls);
	assert_line_answers(&cfg->listeners[2], "UPGRADE\r\n", PROTO_UPGRADE, "OK go\r\n");
	assert_line_answers(&cfg->listeners[2], "STARTTLS\r\n", PROTO_CONTINUE, "NO\r\n");
	assert_line_answers(&cfg->listeners[2], "PING\r\n", PROTO_CONTINUE, "NO\r\n");
	config_unref(cfg);
}

static void
test_protocol_block_errors(void **state)
{
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"smtp\";\n"
	    "  line = { command = \"GO\"; };\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:2: listeners.[0].line: only applies to listeners with protocol = \"line\"");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"line\";\n"
	    "  line = { command = \"START TLS\"; };\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:2: listeners.[0].line.command: expected one word, such as \"STARTTLS\"");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"line\";\n"
	    "  line = { reply = \"two\\nlines\"; };\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:2: listeners.[0].line.reply: expected printable text of at most 512 characters, without CR or LF");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"smtp\";\n"
	    "  client_tls = \"none\"; require_tls = true;\n"
	    "  backend = { address = \"127.0.0.1:2\"; }; } );\n",
	    "t.conf:2: listeners.[0].require_tls: cannot be true with client_tls = \"none\"");
}

static void
test_http_block(void **state)
{
	const char *text =
	    "listeners = ( { name = \"web\"; listen = \"127.0.0.1:1\"; protocol = \"http\";\n"
	    "  http = { connect_allow = [ \"db.internal:5432\", \"*.example.com:443\", \"[::1]:8443\" ]; }; } );\n";
	struct config	*cfg = config_load_string(text, "t.conf", &errs);

	assert_non_null(cfg);
	assert_ptr_equal(cfg->listeners[0].proto, &proto_http);
	assert_true(cfg->listeners[0].require_tls);
	assert_false(cfg->listeners[0].backend.has_address);
	/* the three rules of connect_allow, and nothing else */
	assert_connect(&cfg->listeners[0], "db.internal:5432", true);
	assert_connect(&cfg->listeners[0], "a.example.com:443", true);
	assert_connect(&cfg->listeners[0], "[::1]:8443", true);
	assert_connect(&cfg->listeners[0], "db.internal:5433", false);
	assert_connect(&cfg->listeners[0], "example.com:443", false);
	config_unref(cfg);
	expect_error(
	    "listeners = ( { name = \"web\"; listen = \"127.0.0.1:1\"; protocol = \"http\";\n"
	    "  http = { connect_allow = [ \"*\" ]; }; } );\n",
	    "t.conf:2: listeners.[0].http.connect_allow.[0]: \"*\" is not a rule (expected host:port, [v6]:port or *.domain:port)");
	expect_error(
	    "listeners = ( { name = \"web\"; listen = \"127.0.0.1:1\"; protocol = \"http\"; } );\n",
	    "t.conf:1: listeners.[0]: an http listener needs backend.address, http.connect_allow or both");
	expect_error(
	    "listeners = ( { name = \"web\"; listen = \"127.0.0.1:1\"; protocol = \"http\";\n"
	    "  backend = { tls = \"implicit\"; }; } );\n",
	    "t.conf:1: listeners.[0]: an http listener needs backend.address, http.connect_allow or both");
	expect_error(
	    "listeners = ( { name = \"web\"; listen = \"127.0.0.1:1\"; protocol = \"http\"; client_tls = \"none\";\n"
	    "  http = { connect_allow = \"a.test:443\"; }; } );\n",
	    "t.conf:1: listeners.[0]: an http listener without client_tls = \"starttls\" (so without CONNECT) needs backend.address");
}

/* Limits, and a backend upgrade that the protocol cannot drive. */
static void
test_limits_and_backend_starttls(void **state)
{
	expect_error("workers = 1025;\n" MINIMAL,
	    "t.conf:1: workers: 1025 is out of range (expected 0 to 1024)");
	expect_error("stats = { listen = \"localhost:9273\"; };\n" MINIMAL,
	    "t.conf:1: stats.listen: \"localhost:9273\": not a numeric address (expected 127.0.0.1:port or [::1]:port)");
	expect_error(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  backend = { address = \"127.0.0.1:2\"; tls = \"starttls\"; }; } );\n",
	    "t.conf:2: listeners.[0].backend.tls: protocol tcp has no upgrade verb to send to the backend (expected none or implicit; starttls works with smtp, imap, pop3, ldap, postgres, line)");
	expect_ok(
	    "listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"smtp\";\n"
	    "  backend = { address = \"127.0.0.1:2\"; tls = \"starttls\"; }; } );\n");
}

#define ROUTED(proto, extra, routes) \
	"listeners = ( { name = \"edge\"; listen = \"127.0.0.1:1\"; protocol = \"" proto "\";\n" \
	extra "\n" \
	"  routes = ( " routes " ); } );\n"
#define ROUTE_A	"{ server_names = [ \"a.test\" ]; backend = { address = \"127.0.0.1:2\"; }; }"

/* Which route (its index), or -1 for none, a server name picks. */
static int
route_of(const struct listener_conf *lc, const char *sni)
{
	const struct route_conf *r = listener_route(lc, sni);

	return r == NULL ? -1 : (int)(r - lc->routes);
}

static void
test_routes(void **state)
{
	const char *text =
	    "listeners = ( { name = \"edge\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  backend = { address = \"127.0.0.1:9\"; };\n"
	    "  routes = (\n"
	    "    { server_names = [ \"Mail.Example.COM\", \"imap.example.com\" ];\n"
	    "      backend = { address = \"127.0.0.1:2\"; proxy_protocol = \"v2\"; }; },\n"
	    "    { server_names = \"*.example.com\";\n"
	    "      backend = { address = \"unix:/run/b.sock\"; tls = \"implicit\"; verify = false; }; },\n"
	    "    { server_names = [ \"*.deep.example.org\", \"example.org\" ];\n"
	    "      backend = { address = \"localhost:4\"; }; }\n"
	    "  ); } );\n";
	struct config		*cfg = load(text);
	const struct listener_conf *lc;

	(void)state;
	assert_non_null(cfg);
	lc = &cfg->listeners[0];
	assert_int_equal(lc->nroutes, 3);
	assert_true(lc->backend.has_address);
	assert_true(lc->routes_proxy_protocol);
	assert_string_equal(lc->routes[0].names[0], "mail.example.com");	/* lower case */
	assert_string_equal(lc->routes[0].where, "t.conf:4: listeners.[0].routes.[0]");
	assert_int_equal(lc->routes[0].backend.proxy_protocol, PROXY_PROTO_V2);
	assert_int_equal(lc->routes[1].backend.tls, BACKEND_TLS_IMPLICIT);
	assert_int_equal(lc->routes[1].backend.address.kind, ADDR_UNIX);
	/* exact names, in any case */
	assert_int_equal(route_of(lc, "mail.example.com"), 0);
	assert_int_equal(route_of(lc, "MAIL.example.Com"), 0);
	/* first match wins: imap.example.com is route 0's, though *.example.com matches too */
	assert_int_equal(route_of(lc, "imap.example.com"), 0);
	/* a wildcard matches one label or more, as connect_allow does, never the domain itself */
	assert_int_equal(route_of(lc, "smtp.example.com"), 1);
	assert_int_equal(route_of(lc, "a.b.example.com"), 1);
	assert_int_equal(route_of(lc, "example.com"), -1);
	assert_int_equal(route_of(lc, "xexample.com"), -1);
	assert_int_equal(route_of(lc, "example.com.evil"), -1);
	assert_int_equal(route_of(lc, "example.org"), 2);
	assert_int_equal(route_of(lc, "x.deep.example.org"), 2);
	assert_int_equal(route_of(lc, "deep.example.org"), -1);
	/* no name, or no host name: no route (the default backend) */
	assert_int_equal(route_of(lc, NULL), -1);
	assert_int_equal(route_of(lc, ".example.com"), -1);
	assert_int_equal(route_of(lc, "a..example.com"), -1);
	assert_int_equal(route_of(lc, "a b.example.com"), -1);
	config_unref(cfg);

	/* with routes, the default backend is optional, on each protocol that can wait */
	expect_ok(ROUTED("tcp", "", ROUTE_A));
	expect_ok(ROUTED("ldap", "", ROUTE_A));
	expect_ok(ROUTED("ldap", "client_tls = \"implicit\";", ROUTE_A));
	expect_ok(ROUTED("postgres", "", ROUTE_A));
	expect_ok(ROUTED("postgres", "require_tls = false;", ROUTE_A));
	expect_ok(ROUTED("smtp", "client_tls = \"implicit\";", ROUTE_A));
	expect_ok(ROUTED("imap", "client_tls = \"implicit\";", ROUTE_A));
	expect_ok(ROUTED("pop3", "client_tls = \"implicit\";", ROUTE_A));
	expect_ok(ROUTED("line", "client_tls = \"implicit\";", ROUTE_A));
	expect_ok(ROUTED("http", "client_tls = \"implicit\";", ROUTE_A));
	/* a route's backend upgrades with the protocol's verb */
	expect_ok(ROUTED("ldap", "",
	    "{ server_names = \"a.test\"; backend = { address = \"127.0.0.1:2\"; tls = \"starttls\"; }; }"));
}

/* -t refuses routes where the backend is reached before the client's handshake. */
static void
test_routes_refused(void **state)
{
	(void)state;
	expect_error(ROUTED("smtp", "", ROUTE_A),
	    "t.conf:3: listeners.[0].routes: listener edge: routes need a backend that waits for "
	    "the client's TLS handshake, but with protocol smtp and client_tls = \"starttls\" the "
	    "backend's greeting and replies are relayed before the upgrade (expected client_tls = "
	    "\"implicit\", or no routes)");
	expect_error(ROUTED("imap", "client_tls = \"starttls\";", ROUTE_A),
	    "t.conf:3: listeners.[0].routes: listener edge: routes need a backend that waits for "
	    "the client's TLS handshake, but with protocol imap and client_tls = \"starttls\" the "
	    "backend's greeting and replies are relayed before the upgrade (expected client_tls = "
	    "\"implicit\", or no routes)");
	expect_error(ROUTED("pop3", "", ROUTE_A),
	    "t.conf:3: listeners.[0].routes: listener edge: routes need a backend that waits for "
	    "the client's TLS handshake, but with protocol pop3 and client_tls = \"starttls\" the "
	    "backend's greeting and replies are relayed before the upgrade (expected client_tls = "
	    "\"implicit\", or no routes)");
	expect_error(ROUTED("line", "", ROUTE_A),
	    "t.conf:3: listeners.[0].routes: listener edge: routes need a backend that waits for "
	    "the client's TLS handshake, but with protocol line and client_tls = \"starttls\" the "
	    "backend's lines are relayed before the upgrade (expected client_tls = \"implicit\", "
	    "or no routes)");
	expect_error(ROUTED("http", "backend = { address = \"127.0.0.1:3\"; };", ROUTE_A),
	    "t.conf:3: listeners.[0].routes: listener edge: routes need a backend that waits for "
	    "the client's TLS handshake, but with protocol http and client_tls = \"starttls\" a "
	    "CONNECT is answered once its backend is connected, before the upgrade (expected "
	    "client_tls = \"implicit\", or no routes)");
	expect_error(ROUTED("ldap", "require_tls = false;", ROUTE_A),
	    "t.conf:3: listeners.[0].routes: listener edge: routes need a backend that waits for "
	    "the client's TLS handshake, but with protocol ldap and client_tls = \"starttls\" "
	    "cleartext operations are relayed before the upgrade when require_tls = false "
	    "(expected client_tls = \"implicit\" or require_tls = true, or no routes)");
	expect_error(ROUTED("tcp", "client_tls = \"none\";", ROUTE_A),
	    "t.conf:3: listeners.[0].routes: listener edge: routes choose the backend by the server "
	    "name of the client's TLS handshake, and with client_tls = \"none\" there is none "
	    "(expected client_tls = \"implicit\", or no routes)");
	expect_error(ROUTED("postgres", "client_tls = \"none\";", ROUTE_A),
	    "t.conf:3: listeners.[0].routes: listener edge: routes choose the backend by the server "
	    "name of the client's TLS handshake, and with client_tls = \"none\" there is none "
	    "(expected client_tls = \"implicit\" or \"starttls\", or no routes)");
}

static void
test_routes_errors(void **state)
{
	(void)state;
	expect_error(ROUTED("tcp", "", "{ server_names = [ \"a.test\", \"*.b.test\", \"*\" ]; "
	    "backend = { address = \"127.0.0.1:2\"; }; }"),
	    "t.conf:3: listeners.[0].routes.[0].server_names.[2]: \"*\" is not a server name "
	    "(expected a host name such as \"mail.example.com\", or \"*.example.com\" for any "
	    "name under example.com)");
	expect_error(ROUTED("tcp", "", "{ server_names = \"a.*.test\"; "
	    "backend = { address = \"127.0.0.1:2\"; }; }"),
	    "t.conf:3: listeners.[0].routes.[0].server_names.[0]: \"a.*.test\" is not a server name "
	    "(expected a host name such as \"mail.example.com\", or \"*.example.com\" for any "
	    "name under example.com)");
	expect_error(ROUTED("tcp", "", "{ server_names = [ \"192.0.2.1\" ]; "
	    "backend = { address = \"127.0.0.1:2\"; }; }"),
	    "t.conf:3: listeners.[0].routes.[0].server_names.[0]: \"192.0.2.1\" is not a server name "
	    "(expected a host name such as \"mail.example.com\", or \"*.example.com\" for any "
	    "name under example.com)");
	expect_error(ROUTED("tcp", "", ROUTE_A ",\n"
	    "{ server_names = [ \"A.test\" ]; backend = { address = \"127.0.0.1:3\"; }; }"),
	    "t.conf:4: listeners.[0].routes.[1].server_names.[0]: \"A.test\" is already routed by "
	    "t.conf:3: listeners.[0].routes.[0]");
	expect_error(ROUTED("tcp", "", "{ server_names = [ ]; backend = { address = \"127.0.0.1:2\"; }; }"),
	    "t.conf:3: listeners.[0].routes.[0].server_names: must not be an empty list");
	expect_error(ROUTED("tcp", "", "{ backend = { address = \"127.0.0.1:2\"; }; }"),
	    "t.conf:3: listeners.[0].routes.[0]: server_names is required (a list of names such as "
	    "\"mail.example.com\" or \"*.example.com\")");
	expect_error(ROUTED("tcp", "", "{ server_names = \"a.test\"; }"),
	    "t.conf:3: listeners.[0].routes.[0]: backend is required (backend = { address = \"host:port\"; };)");
	expect_error(ROUTED("tcp", "", "{ server_names = \"a.test\"; backend = { tls = \"implicit\"; }; }"),
	    "t.conf:3: listeners.[0].routes.[0].backend: address is required (host:port, [v6]:port or unix:/path)");
	expect_error(ROUTED("tcp", "", "{ server_names = \"a.test\"; backend = { address = \"127.0.0.1\"; }; }"),
	    "t.conf:3: listeners.[0].routes.[0].backend.address: \"127.0.0.1\": missing :port (expected host:port, [v6]:port or unix:/path)");
	expect_error(ROUTED("tcp", "", "{ server_names = \"a.test\"; backend = { address = \"127.0.0.1:2\"; tls = \"starttls\"; }; }"),
	    "t.conf:3: listeners.[0].routes.[0].backend.tls: protocol tcp has no upgrade verb to send to the backend (expected none or implicit; starttls works with smtp, imap, pop3, ldap, postgres, line)");
	expect_error(ROUTED("tcp", "", "{ server_names = \"a.test\"; servers = 1; backend = { address = \"127.0.0.1:2\"; }; }"),
	    "t.conf:3: listeners.[0].routes.[0].servers: unknown setting (expected one of server_names, backend)");
	expect_error(ROUTED("tcp", "", ""),
	    "t.conf:3: listeners.[0].routes: must hold at least one route");
	expect_error(
	    "listeners = ( { name = \"edge\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n"
	    "  routes = { server_names = \"a.test\"; }; } );\n",
	    "t.conf:2: listeners.[0].routes: expected a list of groups ( { server_names = [ ... ]; "
	    "backend = { ... }; } ), found a group");
	/* each route's backend TLS context is checked like the listener's */
	expect_error(ROUTED("tcp", "", "{ server_names = \"a.test\"; backend = { address = \"127.0.0.1:2\"; "
	    "tls = \"implicit\"; ca = \"/nonexistent/ca.pem\"; }; }"),
	    "t.conf:3: listeners.[0].routes.[0].backend.ca: cannot load CA certificates from "
	    "/nonexistent/ca.pem: No such file or directory");
}

#define EDGE(lines) \
	"listeners = ( { name = \"a\"; listen = \"127.0.0.1:1\"; protocol = \"tcp\";\n" \
	lines "\n" \
	"  backend = { address = \"127.0.0.1:2\"; }; } );\n"
#define ACCESS_EXPECTED "(expected \"allow PREFIX\", \"deny PREFIX\", \"allow all\" or " \
	"\"deny all\", where PREFIX is an IPv4 or IPv6 address, optionally /length)"

/* access: rules as read, and each malformed one named with its index. */
static void
test_access(void **state)
{
	struct config	*cfg;
	const struct listener_conf *lc;
	char		 text[CIDR_FORMAT_MAX];

	cfg = config_load_string(EDGE("  access = [ \"deny 192.0.2.7\", \"allow  192.0.2.0/24\", "
	    "\"allow 2001:db8::/32\", \"deny ::ffff:198.51.100.0/120\", \"deny all\" ];"),
	    "t.conf", &errs);
	assert_non_null(cfg);
	lc = &cfg->listeners[0];
	assert_int_equal(lc->naccess, 5);
	cidr_rule_format(&lc->access[0], text, sizeof(text));
	assert_string_equal(text, "deny 192.0.2.7/32");
	cidr_rule_format(&lc->access[1], text, sizeof(text));
	assert_string_equal(text, "allow 192.0.2.0/24");
	cidr_rule_format(&lc->access[2], text, sizeof(text));
	assert_string_equal(text, "allow 2001:db8::/32");
	cidr_rule_format(&lc->access[3], text, sizeof(text));
	assert_string_equal(text, "deny 198.51.100.0/24");
	cidr_rule_format(&lc->access[4], text, sizeof(text));
	assert_string_equal(text, "deny all");
	assert_false(lc->client_limits.active);
	config_unref(cfg);

	/* one string is a list of one */
	cfg = config_load_string(EDGE("  access = \"deny all\";"), "t.conf", &errs);
	assert_non_null(cfg);
	assert_int_equal(cfg->listeners[0].naccess, 1);
	config_unref(cfg);

	expect_error(EDGE("  access = [ \"allow 10.0.0.0/8\", \"permit 10.0.0.0/8\" ];"),
	    "t.conf:2: listeners.[0].access.[1]: \"permit 10.0.0.0/8\": does not start with "
	    "allow or deny " ACCESS_EXPECTED);
	expect_error(EDGE("  access = [ \"deny 192.0.2.1/24\" ];"),
	    "t.conf:2: listeners.[0].access.[0]: \"deny 192.0.2.1/24\": 192.0.2.1 has bits set "
	    "past /24 (expected the network, 192.0.2.0/24, or the address alone) " ACCESS_EXPECTED);
	expect_error(EDGE("  access = [ \"deny 192.0.2.0/33\" ];"),
	    "t.conf:2: listeners.[0].access.[0]: \"deny 192.0.2.0/33\": \"/33\" is not a "
	    "prefix length (expected 0 to 32) " ACCESS_EXPECTED);
	expect_error(EDGE("  access = [ \"allow 2001:db8::/129\" ];"),
	    "t.conf:2: listeners.[0].access.[0]: \"allow 2001:db8::/129\": \"/129\" is not a "
	    "prefix length (expected 0 to 128) " ACCESS_EXPECTED);
	expect_error(EDGE("  access = [ \"allow example.com\" ];"),
	    "t.conf:2: listeners.[0].access.[0]: \"allow example.com\": no IPv4 or IPv6 "
	    "address, prefix or \"all\" after the action " ACCESS_EXPECTED);
	expect_error(EDGE("  access = [ \"deny all \" ];"),
	    "t.conf:2: listeners.[0].access.[0]: \"deny all \": no IPv4 or IPv6 "
	    "address, prefix or \"all\" after the action " ACCESS_EXPECTED);
	expect_error(EDGE("  access = 7;"),
	    "t.conf:2: listeners.[0].access: expected a string or a list of strings, found an integer");
}

/* client_limits: defaults, ranges, and what only applies with something else. */
static void
test_client_limits(void **state)
{
	struct config	*cfg;
	const struct client_limits_conf *c;

	cfg = config_load_string(EDGE("  client_limits = { sessions_per_address = 3; "
	    "sessions_per_prefix = 20; prefix_ipv6 = 56; new_per_second = 5; table_size = 1024; };"),
	    "t.conf", &errs);
	assert_non_null(cfg);
	c = &cfg->listeners[0].client_limits;
	assert_true(c->active);
	assert_int_equal(c->limits.per_address, 3);
	assert_int_equal(c->limits.per_prefix, 20);
	assert_int_equal(c->limits.prefix4, 24);
	assert_int_equal(c->limits.prefix6, 56);
	assert_int_equal(c->limits.rate, 5);
	assert_int_equal(c->limits.burst, 10);
	assert_int_equal(c->table_size, 1024);
	config_unref(cfg);

	/* an empty group limits nothing */
	cfg = config_load_string(EDGE("  client_limits = { };"), "t.conf", &errs);
	assert_non_null(cfg);
	assert_false(cfg->listeners[0].client_limits.active);
	assert_int_equal(cfg->listeners[0].client_limits.table_size, 65536);
	config_unref(cfg);

	expect_error(EDGE("  client_limits = { prefix_ipv4 = 33; };"),
	    "t.conf:2: listeners.[0].client_limits.prefix_ipv4: 33 is out of range (expected 1 to 32)");
	expect_error(EDGE("  client_limits = { table_size = 8; };"),
	    "t.conf:2: listeners.[0].client_limits.table_size: 8 is out of range (expected 16 to 16777216)");
	expect_error(EDGE("  client_limits = { burst = 0; new_per_second = 1; };"),
	    "t.conf:2: listeners.[0].client_limits.burst: 0 is out of range (expected 1 to 1000000)");
	/* the block of starttls-proxy.conf(5) as written, every default spelled out */
	expect_ok(EDGE("  client_limits = { sessions_per_address = 0; sessions_per_prefix = 0; "
	    "prefix_ipv4 = 24; prefix_ipv6 = 64; new_per_second = 0; burst = 10; "
	    "table_size = 65536; };"));
	expect_error(EDGE("  client_limits = { per_address = 5; };"),
	    "t.conf:2: listeners.[0].client_limits.per_address: unknown setting (expected one of "
	    "sessions_per_address, sessions_per_prefix, prefix_ipv4, prefix_ipv6, new_per_second, "
	    "burst, table_size)");
	expect_error(EDGE("  client_limits = 5;"),
	    "t.conf:2: listeners.[0].client_limits: expected a group { ... }, found an integer");
}

/* Every problem is reported, not only the first. */
static void
test_all_errors_collected(void **state)
{
	const char *text =
	    "workers = -2; max_connections = -1;\n"
	    "listeners = ( { name = \"a\"; listen = \"x\"; protocol = \"y\";\n"
	    "  backend = { address = \"z\"; }; } );\n";

	assert_null(config_load_string(text, "t.conf", &errs));
	assert_int_equal(errs.count, 5);
	teardown_errs();
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_full_listener),
		cmocka_unit_test(test_syntax_error),
		cmocka_unit_test(test_unknown_settings),
		cmocka_unit_test(test_protocol_errors),
		cmocka_unit_test(test_listener_errors),
		cmocka_unit_test(test_number_errors),
		cmocka_unit_test(test_tls_errors),
		cmocka_unit_test(test_backend_errors),
		cmocka_unit_test(test_protocol_defaults),
		cmocka_unit_test(test_protocol_block_errors),
		cmocka_unit_test(test_http_block),
		cmocka_unit_test(test_limits_and_backend_starttls),
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_routes_refused),
		cmocka_unit_test(test_routes_errors),
		cmocka_unit_test(test_all_errors_collected),
		cmocka_unit_test(test_access),
		cmocka_unit_test(test_client_limits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
