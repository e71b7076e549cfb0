"""A real SMTP server for the tests: aiosmtpd (Debian's python3-aiosmtpd),
in a thread, recording every command it receives and every message."""
import ssl

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

from helpers import free_port


class Recorder:
    def __init__(self):
        self.commands = []
        self.messages = []
        self.in_tls = []  # for each command: did it arrive inside TLS

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK message accepted"


def make_smtp_class(recorder):
    class RecordingSMTP(SMTP):
        pass

    for verb in ("HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "AUTH",
                 "STARTTLS", "VRFY", "HELP", "EXPN"):
        parent = getattr(SMTP, "smtp_" + verb)

        async def method(self, arg, _verb=verb, _parent=parent):
            recorder.commands.append((_verb, arg))
            recorder.in_tls.append(self._tls_protocol is not None)
            return await _parent(self, arg)
        setattr(RecordingSMTP, "smtp_" + verb, method)
    return RecordingSMTP


def _accept_any(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=True)


class SMTPBackend(Controller):
    """aiosmtpd on 127.0.0.1.  It offers STARTTLS itself (starttls_ctx) and
    AUTH before TLS, so that the tests can see the proxy hide both; with
    implicit_ctx it speaks TLS from the first byte (SMTPS)."""

    def __init__(self, starttls_ctx=None, implicit_ctx=None):
        self.recorder = Recorder()
        self.smtp_class = make_smtp_class(self.recorder)
        self.port = free_port()
        kwargs = dict(authenticator=_accept_any, auth_require_tls=False)
        if starttls_ctx is not None:
            kwargs.update(tls_context=starttls_ctx, require_starttls=False)
        super().__init__(self.recorder, hostname="127.0.0.1", port=self.port,
                         ssl_context=implicit_ctx, server_hostname="backend.test", **kwargs)
        self.start()

    def factory(self):
        return self.smtp_class(self.handler, **self.SMTP_kwargs)

    @property
    def commands(self):
        return self.recorder.commands

    @property
    def messages(self):
        return self.recorder.messages

    def verbs(self):
        return [c for c, _ in self.recorder.commands]
