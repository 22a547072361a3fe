"""Verify the first DKIM-Signature of each message file with dkimpy.

Usage: dkimpy_verify.py NAME RECORD FILE...

The key record RECORD is the answer for the TXT name NAME (for example
mail._domainkey.a.test); every other name has no record. dkimpy's own
dkimverify command has no way to pass a key, and tests never use the system
resolver. Prints "pass" or "fail" for each FILE, one a line, in order; exits
2 on bad usage.
"""
import sys

import dkim


def main():
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    name, record = sys.argv[1].rstrip("."), sys.argv[2].encode()

    def dnsfunc(qname, timeout=5):
        if isinstance(qname, bytes):
            qname = qname.decode()
        return record if qname.rstrip(".").lower() == name.lower() else None

    for path in sys.argv[3:]:
        with open(path, "rb") as f:
            msg = f.read()
        print("pass" if dkim.verify(msg, dnsfunc=dnsfunc) else "fail")
    return 0


if __name__ == "__main__":
    sys.exit(main())
