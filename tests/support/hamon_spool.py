"""aiosmtpd handler for hamon's mail tests: each accepted mail becomes
<dir>/NNNN.txt (in arrival order) holding a few decoded headers, a blank
line and the decoded body. Recipients starting with "reject" get a 550."""

import email
import email.policy
import os


class Spool:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 1:
            parser.error("Spool takes the spool directory")
        return cls(args[0])

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        self.count += 1
        ssl_object = server.transport.get_extra_info("ssl_object")
        lines = [
            "tls: %s" % (ssl_object.version() if ssl_object else "no"),
            "env-from: %s" % envelope.mail_from,
            "env-to: %s" % ",".join(envelope.rcpt_tos),
        ]
        for name in ("From", "To", "Subject", "Message-ID", "Date", "Content-Type"):
            lines.append("%s: %s" % (name.lower(), msg.get(name, "")))
        text = "\n".join(lines) + "\n\n" + msg.get_content().replace("\r\n", "\n")
        path = os.path.join(self.directory, "%04d.txt" % self.count)
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.rename(path + ".tmp", path)
        return "250 OK"
