"""Authentication and authorisation (API.md): principals and their scopes and wallet patterns
(``principal``, pure), API key secrets (``tokens``), the key verifier with its revocation-aware
cache (``key_verifier``), JWT verification (``jwt_verifier``), both behind ``Authenticator``, and
the ``wallet keys`` command (``cli``). The HTTP step that uses them is ``wallet.http.auth``."""
