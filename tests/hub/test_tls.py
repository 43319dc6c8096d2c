"""Our own downloads (URL, Civitai, `lora install`'s Hub GET) verify TLS as huggingface_hub's client does."""

import ssl


def test_downloads_verify_certificates_against_the_system_store_and_certifi():
    import certifi

    from lorahub_cli.sources.url import opener, tls_context

    context = tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    with open(certifi.where(), encoding="ascii") as bundle:
        in_certifi = bundle.read().count("BEGIN CERTIFICATE")
    assert context.cert_store_stats()["x509_ca"] >= in_certifi   # certifi's roots at least, beside the system's
    https = [h for h in opener().handlers if type(h).__name__ == "HTTPSHandler"]
    assert len(https) == 1 and https[0]._context.verify_mode == ssl.CERT_REQUIRED
