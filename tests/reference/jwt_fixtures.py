"""Keys and tokens for the JWT tests, signed by an independent implementation (PyJWT + cryptography).

Writes to --out:
  secret.txt     HS256 secret
  rsa_pub.pem    RSA public key (RS256), kid "rsa-1" in the JWKS
  ec_pub.pem     EC P-256 public key (ES256), kid "ec-1" in the JWKS
  jwks.json      both public keys as a JWK set
  tokens.json    {name: token}; valid tokens expire in 2100, expired ones in 2001
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISS = "https://id.example.test"
AUD = "switchyard-api"
FUTURE = 4102444800  # 2100-01-01
PAST = 978307200  # 2001-01-01


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)

    secret = secrets.token_hex(32)
    other_secret = secrets.token_hex(32)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())

    def pem(pub) -> bytes:
        return pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    rsa_pem = pem(rsa_key.public_key())
    with open(os.path.join(out, "secret.txt"), "w") as f:
        f.write(secret)
    with open(os.path.join(out, "rsa_pub.pem"), "wb") as f:
        f.write(rsa_pem)
    with open(os.path.join(out, "ec_pub.pem"), "wb") as f:
        f.write(pem(ec_key.public_key()))

    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    rsa_jwk.update(kid="rsa-1", use="sig", alg="RS256")
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    ec_jwk.update(kid="ec-1", use="sig", alg="ES256")
    with open(os.path.join(out, "jwks.json"), "w") as f:
        json.dump({"keys": [rsa_jwk, ec_jwk]}, f, indent=1)

    def claims(sub="alice", **kw):
        c = {"sub": sub, "iss": ISS, "aud": AUD, "exp": FUTURE, "iat": PAST}
        c.update(kw)
        return {k: v for k, v in c.items() if v is not None}

    t = {
        "hs_valid": jwt.encode(claims(), secret, algorithm="HS256"),
        # The same user later: another token (other iat), the same issuer and subject.
        "hs_valid_renewed": jwt.encode(claims(iat=PAST + 60), secret, algorithm="HS256"),
        "hs_expired": jwt.encode(claims(exp=PAST), secret, algorithm="HS256"),
        "hs_wrong_aud": jwt.encode(claims(aud="another-api"), secret, algorithm="HS256"),
        "hs_wrong_iss": jwt.encode(claims(iss="https://evil.example"), secret, algorithm="HS256"),
        "hs_wrong_key": jwt.encode(claims(), other_secret, algorithm="HS256"),
        "hs_no_exp": jwt.encode(claims(exp=None), secret, algorithm="HS256"),
        "hs_not_yet": jwt.encode(claims(nbf=FUTURE - 10), secret, algorithm="HS256"),
        "none_alg": jwt.encode(claims(), None, algorithm="none"),
        "rs_valid": jwt.encode(claims(sub="rsa-user"), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"}),
        "rs_wrong_key": jwt.encode(claims(), other_rsa, algorithm="RS256", headers={"kid": "rsa-1"}),
        "rs_expired": jwt.encode(claims(exp=PAST), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"}),
        "es_valid": jwt.encode(claims(sub="ec-user"), ec_key, algorithm="ES256", headers={"kid": "ec-1"}),
        "es_pem_valid": jwt.encode(claims(sub="ec-user"), ec_key, algorithm="ES256"),
    }
    # Algorithm confusion: HS256 "signed" with the RSA public key as the HMAC secret (PyJWT refuses
    # to produce it, so it is assembled by hand).
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = b64(json.dumps(claims()).encode())
    sig = hmac.new(rsa_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    t["hs_with_rsa_pem"] = f"{head}.{body}.{b64(sig)}"
    for i in range(200):
        t[f"user{i}"] = jwt.encode(claims(sub=f"user-{i}"), secret, algorithm="HS256")
    with open(os.path.join(out, "tokens.json"), "w") as f:
        json.dump(t, f, indent=1)


if __name__ == "__main__":
    main()
