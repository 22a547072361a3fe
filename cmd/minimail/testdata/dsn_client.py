"""Python's smtplib and email as a DSN client, for TestDSNWithPythonSmtplib.

send JSON: submit one message over submission with STARTTLS (the site's
certificate as the only trust anchor, its name checked by hand since the
test connects to 127.0.0.1) and AUTH, with the given MAIL and RCPT
parameters; prints the server's EHLO features.
parse FILE: read a stored message with email and print, as JSON, what a
delivery status notification says.
"""
import email
import email.policy
import json
import smtplib
import ssl
import sys


def send(args):
    ctx = ssl.create_default_context(cafile=args["cafile"])
    ctx.check_hostname = False  # checked below: the test dials 127.0.0.1
    with smtplib.SMTP(args["host"], args["port"], local_hostname="client.test", timeout=30) as s:
        s.ehlo()
        s.starttls(context=ctx)
        names = [v for k, v in s.sock.getpeercert().get("subjectAltName", ()) if k == "DNS"]
        if args["servername"] not in names:
            raise SystemExit("certificate names %r, not %s" % (names, args["servername"]))
        s.ehlo()
        s.login(args["user"], args["password"])
        refused = s.sendmail(args["from"], args["rcpts"], args["msg"].encode(),
                             mail_options=args["mail_options"], rcpt_options=args["rcpt_options"])
        print(json.dumps({"dsn": s.has_extn("dsn"), "refused": refused}))


def parse(path):
    with open(path, "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.compat32)
    out = {
        "content_type": msg.get_content_type(),
        "report_type": msg.get_param("report-type"),
        "from": msg.get("From"),
        "return_path": msg.get("Return-Path"),
        "parts": [],
        "per_message": {},
        "per_recipient": [],
        "returned": "",
    }
    for part in msg.get_payload():
        out["parts"].append(part.get_content_type())
        if part.get_content_type() == "message/delivery-status":
            blocks = part.get_payload()  # email reads each field block as a Message
            out["per_message"] = dict(blocks[0].items())
            out["per_recipient"] = [dict(b.items()) for b in blocks[1:]]
        elif part.get_content_type() == "text/plain":
            out["text"] = part.get_payload()
        elif part.get_content_type() in ("text/rfc822-headers", "message/rfc822"):
            p = part.get_payload()
            out["returned"] = p if isinstance(p, str) else p[0].as_string()
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(json.loads(sys.argv[2]))
    else:
        parse(sys.argv[2])
