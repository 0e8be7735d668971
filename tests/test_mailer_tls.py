"""Error mail with a login (MAIL_USER, MAIL_PASSWORD_FILE): only over TLS, against a real local SMTP server
(aiosmtpd) with a test certificate made here with openssl."""

from __future__ import annotations

import logging
import shutil
import socket
import ssl
import subprocess
import time

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from avoviirscollector.config import Settings
from avoviirscollector.mailer import attach_mail_handler
from tests.support import free_port, settings_for, wait_until
from tests.support.mail import Inbox

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
USER, PASSWORD = "avo-mailer", "correct horse battery staple"
OWN = "avoviirscollector.mailer"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def trust(certificate, monkeypatch):
    """The mailer verifies the relay against the CA bundle OpenSSL is pointed at: here, the test certificate."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    return certificate


class Relay(Inbox):
    """An inbox that also records every login attempt (and whether it came over TLS)."""

    def __init__(self) -> None:
        super().__init__()
        self.logins: list[tuple[str, str, bool]] = []

    def authenticator(self, server, session, envelope, mechanism, auth_data):
        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password, session.ssl is not None))
        return AuthResult(success=(login, password) == (USER, PASSWORD), handled=False)  # aiosmtpd answers 235/535


def start_relay(certificate, starttls: bool = True, smtps: bool = False, port: int | None = None):
    relay = Relay()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    kwargs: dict = {"authenticator": relay.authenticator, "auth_required": True}
    if smtps:  # TLS from the first byte (aiosmtpd would only count STARTTLS as TLS for auth_require_tls)
        kwargs.update(ssl_context=context, auth_require_tls=False)
    elif starttls:
        kwargs.update(tls_context=context, require_starttls=True, auth_require_tls=True)
    else:
        kwargs.update(auth_require_tls=False)  # would even take a password in the clear: our client must not offer it
    relay.port = port or free_port()
    controller = Controller(relay, hostname="127.0.0.1", port=relay.port, **kwargs)
    controller.start()
    return relay, controller


def login_settings(tmp_path, port: int, password: str = PASSWORD) -> Settings:
    """Mail through 127.0.0.1:``port`` as MAIL_USER, with ``password`` in MAIL_PASSWORD_FILE (mode 0600)."""
    secret = tmp_path / "mail.pw"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    return settings_for(tmp_path, MAILHOST=f"127.0.0.1:{port}", LOG_SENDER="viirs@example.org",
                        LOG_RECIPIENT="ops@example.org", MAIL_USER=USER, MAIL_PASSWORD_FILE=secret)


def own_errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == OWN and r.levelno == logging.ERROR]


def mail_one_error(settings: Settings, name: str, caplog, wait: float) -> None:
    """An error logged, and once the mailer has said (within ``wait`` s) why it failed to mail it, another."""
    logger = logging.getLogger(f"task_broker.{name}")
    logger.propagate = False
    handler = attach_mail_handler(logger, settings, "task_broker", interval=60)
    try:
        with caplog.at_level(logging.INFO):
            logger.error("queue file unreadable")
            wait_until(lambda: own_errors(caplog), wait, "the mailer's own error line")
            logger.error("still going after the mail failed")  # the program keeps running
    finally:
        logger.removeHandler(handler)
        handler.close()


def mailed(relay: Relay, settings: Settings, name: str) -> list:
    """One error logged by a program's mail handler: the mails the relay got for it (within 10 s)."""
    logger = logging.getLogger(f"task_broker.{name}")
    logger.propagate = False
    handler = attach_mail_handler(logger, settings, "task_broker", interval=60)
    try:
        logger.error("queue file unreadable")
        return relay.wait_for(1, 10)
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_login_over_starttls_reaches_the_relay(tmp_path, trust, caplog):
    relay, controller = start_relay(trust)
    try:
        mails = mailed(relay, login_settings(tmp_path, relay.port), "tls-ok")
    finally:
        controller.stop()
    assert len(mails) == 1 and "queue file unreadable" in mails[0][2].get_content()
    assert relay.logins == [(USER, PASSWORD, True)]  # logged in, over TLS
    assert not own_errors(caplog)


def test_a_relay_without_starttls_gets_no_password(tmp_path, trust, caplog):
    relay, controller = start_relay(trust, starttls=False)
    try:
        with caplog.at_level(logging.INFO):
            mail_one_error(login_settings(tmp_path, relay.port), "no-tls", caplog, wait=3)
    finally:
        controller.stop()
    assert relay.logins == [] and relay.mails == []
    errors = own_errors(caplog)
    assert len(errors) == 1 and "does not offer STARTTLS, so the password was not sent" in errors[0], errors
    assert PASSWORD not in caplog.text


def test_a_wrong_password_is_one_error_line_never_mailed_and_the_program_goes_on(tmp_path, trust, caplog):
    relay, controller = start_relay(trust)
    root = logging.getLogger()
    try:
        with caplog.at_level(logging.INFO):
            settings = login_settings(tmp_path, relay.port, password="wrong")
            handler = attach_mail_handler(root, settings, "task_broker", interval=60)  # the program's real set-up
            try:
                logging.getLogger("task_broker").error("queue file unreadable")
                wait_until(lambda: own_errors(caplog), 10, "the mailer's own error line")
                time.sleep(1.5)  # the next spool pass would carry the mailer's own line if it were mailed
                logging.getLogger("task_broker").error("still going")
            finally:
                root.removeHandler(handler)
                handler.close()
    finally:
        controller.stop()
    errors = own_errors(caplog)
    assert len(errors) == 1 and f"refused the login of MAIL_USER={USER!r} (535" in errors[0], errors
    # smtplib tries PLAIN then LOGIN: each over TLS, neither with anything but the file's password
    assert "wrong" not in errors[0] and relay.mails == [] and set(relay.logins) == {(USER, "wrong", True)}
    spooled = (tmp_path / "state" / "mail-task_broker.json").read_text()
    assert "queue file unreadable" in spooled and "still going" in spooled and "error mail via" not in spooled


def _can_bind(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_smtps_on_465(tmp_path, trust, caplog):
    if not _can_bind(465):
        pytest.skip("port 465 cannot be bound here (needs root in the tests' own network namespace)")
    relay, controller = start_relay(trust, smtps=True, port=465)
    try:
        mails = mailed(relay, login_settings(tmp_path, 465), "smtps")
    finally:
        controller.stop()
    # aiosmtpd sets session.ssl for STARTTLS only; this relay speaks nothing but TLS
    assert len(mails) == 1 and [login[:2] for login in relay.logins] == [(USER, PASSWORD)]


