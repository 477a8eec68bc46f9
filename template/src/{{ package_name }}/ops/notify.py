"""Notifications: what a lifecycle event means, by e-mail and/or a signed webhook, with the figures
that matter and a link to the dashboard, for people who do not watch CI.

Configured from the environment only, so CI secrets reach it and no file holds a password:
    LAB2PROD_SMTP_HOST, _PORT (default 25, or 587 with STARTTLS), _USER, _PASSWORD, _FROM, _TO
    (comma-separated), _STARTTLS (1/true/yes)
    LAB2PROD_WEBHOOK_URL and LAB2PROD_WEBHOOK_SECRET: a JSON POST whose header
    `X-Lab2prod-Signature: sha256=<hex>` is the HMAC-SHA256 of the body with the secret, so the
    receiver can tell it came from this project
    LAB2PROD_DASHBOARD_URL: where the dashboard is published
A notification never fails the command that sent it: the event already happened and is in the
audit log; a failed delivery is a warning on stderr.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import smtplib
import sys
import urllib.request
from email.message import EmailMessage
from typing import Any

from .settings import Settings

SIGNATURE_HEADER = "X-Lab2prod-Signature"
TIMEOUT_SECONDS = 10
TRUE_WORDS = {"1", "true", "yes"}


def message(settings: Settings, event: str, subject: str, lines: list[str], figures: dict) -> dict:
    return {
        "model_name": settings.model_name,
        "event": event,
        "subject": subject,
        "lines": lines,
        "figures": figures,
        "dashboard_url": os.environ.get("LAB2PROD_DASHBOARD_URL") or None,
    }


def notify(
    settings: Settings, event: str, subject: str, lines: list[str], figures: dict[str, Any]
) -> list[str]:
    """Send what is configured; the channels that delivered. Warns, never raises."""
    body = message(settings, event, subject, lines, figures)
    environ = os.environ.get
    sent = []
    for channel, configured, send in (
        ("e-mail", environ("LAB2PROD_SMTP_HOST"), send_mail),
        ("webhook", environ("LAB2PROD_WEBHOOK_URL"), send_webhook),
    ):
        if not configured:
            continue
        try:
            send(body)
            sent.append(channel)
        except Exception as error:
            print(f"WARNING: the {channel} notification failed: {error}", file=sys.stderr)
    return sent


def text(body: dict[str, Any]) -> str:
    figures = [f"{name}: {value}" for name, value in body["figures"].items()]
    link = [f"Dashboard: {body['dashboard_url']}"] if body["dashboard_url"] else []
    return "\n".join([*body["lines"], "", *figures, "", *link]).strip() + "\n"


def send_mail(body: dict[str, Any]) -> None:
    environ = os.environ.get
    recipients = [name.strip() for name in environ("LAB2PROD_SMTP_TO", "").split(",") if name]
    if not recipients:
        raise ValueError("LAB2PROD_SMTP_TO names no recipient")
    starttls = environ("LAB2PROD_SMTP_STARTTLS", "").lower() in TRUE_WORDS
    mail = EmailMessage()
    mail["Subject"] = f"[{body['model_name']}] {body['subject']}"
    mail["From"] = environ("LAB2PROD_SMTP_FROM") or f"lab2prod@{environ('LAB2PROD_SMTP_HOST')}"
    mail["To"] = ", ".join(recipients)
    mail.set_content(text(body))
    port = int(environ("LAB2PROD_SMTP_PORT") or (587 if starttls else 25))
    with smtplib.SMTP(environ("LAB2PROD_SMTP_HOST"), port, timeout=TIMEOUT_SECONDS) as server:
        if starttls:
            server.starttls()
        if environ("LAB2PROD_SMTP_USER"):
            server.login(environ("LAB2PROD_SMTP_USER"), environ("LAB2PROD_SMTP_PASSWORD", ""))
        server.send_message(mail)


def signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def send_webhook(body: dict[str, Any]) -> None:
    secret = os.environ.get("LAB2PROD_WEBHOOK_SECRET")
    if not secret:
        raise ValueError("LAB2PROD_WEBHOOK_SECRET is not set, so the receiver could not check it")
    data = json.dumps(body, sort_keys=True, default=str).encode()
    request = urllib.request.Request(
        os.environ["LAB2PROD_WEBHOOK_URL"],
        data=data,
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature(data, secret)},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as reply:
        reply.read()
