"""testssl.sh (Debian's testssl.sh) against an implicit-TLS listener and an
SMTP STARTTLS listener with the shipped default TLS settings: no finding
at severity MEDIUM or above about protocols, ciphers or TLS features.

Findings about the certificate itself (trust, revocation URIs, lifetime)
depend on the certificate an operator installs, not on the daemon; the
test's certificate comes from a test CA given to testssl with --add-ca,
and those findings are listed but not counted."""
import json
import os
import subprocess

import pytest

from helpers import free_port
from protocols import listener
from smtp_backend import SMTPBackend

pytestmark = pytest.mark.skipif(os.environ.get("STP_SANITIZED") == "1",
                                reason="testssl.sh runs on the plain build")

SEVERE = {"MEDIUM", "HIGH", "CRITICAL"}
CERTIFICATE_IDS = ("cert", "OCSP", "DNS_CAA", "intermediate_cert", "chain_of_trust")


def run_testssl(target, tmp_path, name, *args):
    out = tmp_path / f"{name}.json"
    r = subprocess.run(["testssl", "--quiet", "--color", "0", "--warnings", "batch",
                        "--sneaky", "--ip", "one", "--jsonfile", str(out), *args, target],
                       capture_output=True, text=True, timeout=600)
    findings = json.loads(out.read_text())
    severe = [f for f in findings if f.get("severity") in SEVERE]
    policy = [f for f in severe if not f["id"].startswith(CERTIFICATE_IDS)]
    return r, findings, policy, [f for f in severe if f not in policy]


def summary(findings):
    by = {}
    for f in findings:
        by[f.get("severity")] = by.get(f.get("severity"), 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(by.items()))


@pytest.mark.parametrize("mode", ["implicit", "smtp"])
def test_testssl_finds_nothing_medium_or_above(daemon, pki, tmp_path, mode):
    mta = SMTPBackend()
    port = free_port()
    proto = "tcp" if mode == "implicit" else "smtp"
    daemon(listener(port, mta.port, protocol=proto, name=mode, pki=pki), debug=False)
    extra = ["--add-ca", str(pki.ca)]
    if mode == "smtp":
        extra += ["-t", "smtp"]
    r, findings, policy, cert = run_testssl(f"localhost:{port}", tmp_path, mode, *extra)
    offered = sorted({f["id"] for f in findings if f["id"] in
                      ("SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3")
                      and f["finding"].startswith("offered")})
    report = (f"testssl.sh {mode}: {len(findings)} findings ({summary(findings)}); "
              f"protocols offered {offered}; MEDIUM+ about TLS policy: "
              f"{[(f['id'], f['finding']) for f in policy]}; about the test certificate: "
              f"{[f['id'] for f in cert]}")
    print(report)
    assert policy == [], report
    assert offered == ["TLS1_2", "TLS1_3"], report
    mta.stop()
