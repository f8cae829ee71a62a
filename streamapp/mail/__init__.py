"""Building blocks of the sending engine, free of Faust and Kafka so each is testable alone.

- `templates`: sandboxed, bounded Jinja2 templates (subject, HTML, text), compiled once at start-up.
- `template_lint`: every name a template uses, checked against the configuration (check-config, start-up).
- `mime`: multipart/alternative messages built straight to bytes (~20x faster than EmailMessage).
- `unsubscribe`: HMAC tokens for List-Unsubscribe links and the secret all workers share.
- `smtp`: a pool of persistent aiosmtplib connections that turns every reply into an outcome.
- `sink`: the development SMTP sink that stores each accepted message in a Maildir.
"""
