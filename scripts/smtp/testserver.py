"""A real SMTP server (aiosmtpd, from PyPI) for syncmail's tests, configured per test.

Usage: testserver.py --port P --dir DIR [--tls implicit|starttls|none] [--certs CERTDIR]

Every accepted message is written to DIR as N.eml (the bytes received, CRLF, dots
unstuffed) and then N.envelope (lines "from ADDR", "rcpt ADDR", "mail-option OPT",
"auth USER"), the envelope last so that a reader never sees half a message. AUTH PLAIN,
LOGIN and XOAUTH2 are offered (after TLS where TLS is on); user "test", password
"secret", or the XOAUTH2 token "token-secret".

DIR/control.json, read at each command, makes the server misbehave on cue:
  {"tempfail_data": N}     answer DATA with 451 for the next N messages
  {"reject": {ADDR: "550 5.1.1 text"}}   refuse RCPT TO for ADDR with that reply
  {"data_delay": S}        store the message, then wait S seconds before answering
Prints "ready" on stdout once it listens.
"""
import argparse
import asyncio
import base64
import json
import os
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

USER, PASSWORD, TOKEN = b"test", b"secret", "token-secret"


def control(d):
    try:
        with open(os.path.join(d, "control.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def set_control(d, c):
    tmp = os.path.join(d, "control.json.tmp")
    with open(tmp, "w") as f:
        json.dump(c, f)
    os.replace(tmp, os.path.join(d, "control.json"))


def authenticator(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == USER and data.password == PASSWORD
    # handled=False: aiosmtpd then answers a failure with 535 itself.
    return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)


class Handler:
    def __init__(self, d):
        self.dir = d

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = control(self.dir).get("reject", {}).get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        c = control(self.dir)
        if c.get("tempfail_data", 0) > 0:
            c["tempfail_data"] -= 1
            set_control(self.dir, c)
            return "451 4.3.0 Temporary failure, please try again later"
        n = len([f for f in os.listdir(self.dir) if f.endswith(".envelope")]) + 1
        with open(os.path.join(self.dir, f"{n}.eml"), "wb") as f:
            f.write(envelope.original_content)
        lines = [f"from {envelope.mail_from}"]
        lines += [f"rcpt {r}" for r in envelope.rcpt_tos]
        lines += [f"mail-option {o}" for o in envelope.mail_options]
        auth = session.auth_data
        if auth:
            lines.append(f"auth {auth.decode() if isinstance(auth, bytes) else auth}")
        tmp = os.path.join(self.dir, f"{n}.envelope.tmp")
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, os.path.join(self.dir, f"{n}.envelope"))
        delay = c.get("data_delay", 0)
        if delay:
            await asyncio.sleep(delay)
        return f"250 2.0.0 Ok: queued as {n}"

    async def auth_XOAUTH2(self, server, args):
        # RFC-less but documented by Google: base64("user=U\x01auth=Bearer T\x01\x01").
        if len(args) < 2:
            return AuthResult(success=False, handled=False)
        try:
            text = base64.b64decode(args[1]).decode()
        except Exception:
            return AuthResult(success=False, handled=False)
        parts = dict(p.split("=", 1) for p in text.split("\x01") if "=" in p)
        ok = parts.get("user") == USER.decode() and parts.get("auth") == f"Bearer {TOKEN}"
        return AuthResult(success=ok, handled=False, auth_data=USER if ok else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--tls", default="none", choices=["implicit", "starttls", "none"])
    ap.add_argument("--certs")
    a = ap.parse_args()
    ctx = None
    if a.tls != "none":
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(os.path.join(a.certs, "server.pem"), os.path.join(a.certs, "server.key"))
    handler = Handler(a.dir)

    def factory():
        return SMTP(
            handler,
            hostname="smtp.test",
            enable_SMTPUTF8=True,
            tls_context=ctx if a.tls == "starttls" else None,
            require_starttls=a.tls == "starttls",
            authenticator=authenticator,
            auth_required=True,
            # With implicit TLS aiosmtpd does not see the TLS under it; the socket is TLS anyway.
            auth_require_tls=a.tls == "starttls",
        )

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        loop.create_server(factory, "127.0.0.1", a.port, ssl=ctx if a.tls == "implicit" else None)
    )
    print("ready", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    sys.exit(main())
